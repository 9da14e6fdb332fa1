"""Where a cached greedy-decoding step's time goes: a `jax.profiler` trace of `decoding.generate`, per HLO op.

    python -m benchmarks.profile_decode [--batch 1] [--new-tokens 128] [--vocab 50257] [--json OUT]

Model: the GPT-2 shape of `benchmarks.compare` (6 layers, width 384, 6 heads, fp32, tied head),
random init, a random 16-token prompt. `generate` is compiled and timed first (best of 5
calls, ms per new token, prefill included), then one call is traced and every executed XLA op
is matched to its compiled HLO: the result sums microseconds per new token by op kind, output
shape and `op_name` (layer indices folded), largest first. The trace adds some overhead per op,
so the op sums exceed the untraced time a little.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.common import GPT2_SHAPE, bench_config, save_json
from benchmarks.profile_step import op_names, trace_ops
from jaxformer import decoding, models
from jaxformer.decoding import search

PROMPT_LEN = 16


def hlo_lines(text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (its output shape, its op_name (see `profile_step.op_names`) with layer indices as *)."""
    shapes = dict(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+)", text, flags=re.MULTILINE))
    return {
        name: (shapes[name], re.sub(r"layers_\d+", "layers_*", op_name)) for name, op_name in op_names(text).items()
    }


def compiled_generate_text(call: Any) -> str:
    """The compiled HLO of the jitted loop that `call()` runs (captured from the arguments `generate` passes)."""
    captured: dict[str, str] = {}
    original = search._token_search

    def capture(*args: Any, **kwargs: Any) -> Any:
        captured["text"] = original.lower(*args, **kwargs).compile().as_text()
        return original(*args, **kwargs)

    search._token_search = capture
    try:
        call()
    finally:
        search._token_search = original
    return captured["text"]


def profile_generate(
    batch: int = 1, new_tokens: int = 128, vocab: int = GPT2_SHAPE["vocab"], **shape: Any
) -> dict[str, Any]:
    """{"ms_per_token", "ops": [{"op", "shape", "op_name", "us_per_token"}...], ...} for one batch size."""
    config = bench_config(vocab=vocab, **shape)
    config = config.replace(max_len=max(config.max_len, PROMPT_LEN + new_tokens))
    params = models.init_params(config, jax.random.PRNGKey(1))
    prompts = np.random.default_rng(batch).integers(1, config.vocab_size, (batch, PROMPT_LEN)).astype(np.int32)

    def call() -> np.ndarray:
        return np.asarray(decoding.generate(config, params, prompts, max_new_tokens=new_tokens))

    call()  # compiles
    times = []
    for _ in range(5):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    lines = hlo_lines(compiled_generate_text(call))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            call()
        totals = trace_ops(Path(tmp))
    grouped: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    for name, micros in totals.items():
        if name in lines:
            shape_text, op_name = lines[name]
            grouped[(name.split(".")[0], shape_text, op_name)] += micros / new_tokens
    ops = sorted(grouped.items(), key=lambda kv: -kv[1])
    return {
        "batch": batch,
        "new_tokens": new_tokens,
        "vocab": vocab,
        "ms_per_token": round(min(times) / new_tokens * 1e3, 3),
        "traced_ops_ms_per_token": round(sum(grouped.values()) / 1e3, 3),
        "ops": [
            {"op": op, "shape": shape_text, "op_name": op_name[-110:], "us_per_token": round(us, 1)}
            for (op, shape_text, op_name), us in ops[:40]
        ],
    }


def print_profile(result: dict[str, Any], top: int = 15) -> None:
    print(
        f"decode profile: batch {result['batch']}, {result['new_tokens']} new tokens, vocab {result['vocab']}: "
        f"{result['ms_per_token']:.3f} ms per new token (untraced); traced ops {result['traced_ops_ms_per_token']:.3f} ms"
    )
    for op in result["ops"][:top]:
        print(f"  {op['us_per_token']:>8.1f} us  {op['op']:<26} {op['shape']:<24} {op['op_name'][-70:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes to profile")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=GPT2_SHAPE["vocab"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = [profile_generate(batch, args.new_tokens, args.vocab) for batch in args.batch]
    for result in results:
        print_profile(result)
    if args.json:
        save_json(args.json, results)


if __name__ == "__main__":
    main()
