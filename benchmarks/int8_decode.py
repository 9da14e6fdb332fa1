"""int8 weight-only decoding at batch 1: quality on a model trained here and tokens/s beside the torch peers.

    python -m benchmarks.int8_decode [--workdir /tmp/jaxformer-int8] [--steps 300] [--json OUT]

Trains (once; later runs load the workdir) a char-level GPT-2-layout model on tinyshakespeare with
`jaxformer train` (experiments/shakespeare_char.py, biases on, so it exports to
`transformers.GPT2LMHeadModel` through jaxformer.hf), quantizes it with `decoding.quantize`
(int8 kernels + per-output-channel float32 scales), then reports
  * greedy token agreement int8 vs float32 over `--new_tokens` tokens from several validation prompts;
  * validation perplexity of both (mean next-character NLL over windows of the validation text);
  * batch-1 greedy new tokens/s, interleaved, medians of `--repeats`: jaxformer fp32, jaxformer int8,
    `transformers` fp32 `generate` on the same weights and `torch.ao.quantization.quantize_dynamic`
    (Linear -> qint8) of that model, each torch side at its faster thread setting.
Prints the CPU model and load (`machine_loaded` when the 1-minute load exceeds half the cores) and
writes benchmarks/results/int8_decode.json.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved, machine, save_json, torch_gpt2, torch_thread_counts, with_torch_threads
from benchmarks.compare import torch_generate
from benchmarks.speculative import DATA, REPO_ROOT, best_torch, train_once
from jaxformer import decoding, inference, models
from jaxformer.decoding.quantize import kernel_bytes, quantize_params

RESULTS = REPO_ROOT / "benchmarks" / "results" / "int8_decode.json"
SHAPE = {"num_layers": 4, "d_model": 256, "num_heads": 4, "d_ff": 1024}
SMOKE_SHAPE = {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64}


def torch_dynamic_int8(model: Any) -> Any:
    """The torch peer: every nn.Linear of a copy of `model` as a dynamically quantized qint8 Linear.

    transformers' GPT-2 uses Conv1D (not nn.Linear) for attention and MLP; only the LM head would be
    converted, so Conv1D layers are swapped for equivalent nn.Linear first.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data.clone()
                setattr(module, child_name, linear)
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


@functools.partial(jax.jit, static_argnames=("config",))
def _window_nll(params: Any, tokens: jax.Array, *, config: Any) -> jax.Array:
    """tokens [B, T] -> summed next-token NLL over the T-1 predictions of every row."""
    logits = models.build(config).apply({"params": params}, tokens[:, :-1]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def perplexity(config: Any, params: Any, ids: list[int], windows: int) -> float:
    """exp(mean NLL) over `windows` non-overlapping windows of max_len tokens of `ids`."""
    width = config.max_len
    count = min(windows, len(ids) // width)
    tokens = np.array(ids[: count * width], np.int32).reshape(count, width)
    total = float(_window_nll(params, jnp.asarray(tokens), config=config))
    return float(np.exp(total / (count * (width - 1))))


def run(
    workdir: Path,
    data: Path = DATA,
    steps: int = 300,
    block: int = 160,
    batch: int = 16,
    prompt_chars: int = 24,
    new_tokens: int = 128,
    prompts: int = 4,
    windows: int = 64,
    repeats: int = 5,
    smoke: bool = False,
) -> dict[str, Any]:
    shape = SMOKE_SHAPE if smoke else SHAPE
    target = train_once(workdir, shape, data, steps, block, batch)
    config, params = target.config, target.params
    qparams = quantize_params(config, params)
    text = (data / "input.txt").read_text(encoding="utf-8")
    start = int(0.92 * len(text))  # in the validation split (the file's last 10%)
    starts = [start + i * 997 for i in range(prompts)]
    rows = [inference.prompt_ids(target, [text[s : s + prompt_chars]])[0] for s in starts]
    width = min(map(len, rows))
    rows = np.array([r[:width] for r in rows], np.int32)
    fp32_tokens = decoding.generate(config, params, rows, max_new_tokens=new_tokens)
    int8_tokens = decoding.generate(config, qparams, rows, max_new_tokens=new_tokens)
    val_text = text[int(0.9 * len(text)) :][: 2 * windows * config.max_len]
    val_ids = list(target.tokenizer.encode(val_text))  # the char tokenizer, as in training
    ppl = {"fp32": perplexity(config, params, val_ids, windows), "int8": perplexity(config, qparams, val_ids, windows)}
    stored, fp32_bytes = kernel_bytes(qparams)

    one = rows[:1]
    plain = functools.partial(decoding.generate, config, params, one, max_new_tokens=new_tokens)
    quant = functools.partial(decoding.generate, config, qparams, one, max_new_tokens=new_tokens)
    plain(), quant()  # compile
    hf_model = torch_gpt2(config, params).eval()
    hf_int8 = torch_dynamic_int8(hf_model).eval()
    theirs = torch_generate(hf_model, one, new_tokens)
    theirs_int8 = torch_generate(hf_int8, one, new_tokens)
    contenders = {"jaxformer fp32": plain, "jaxformer int8": quant}
    for n in torch_thread_counts():
        contenders[f"transformers fp32@{n}"] = with_torch_threads(
            n, functools.partial(torch_generate, hf_model, one, new_tokens)
        )
        contenders[f"torch dynamic int8@{n}"] = with_torch_threads(
            n, functools.partial(torch_generate, hf_int8, one, new_tokens)
        )
    times = interleaved(contenders, repeats)
    table: dict[str, dict[str, Any]] = {}
    for name in ("jaxformer fp32", "jaxformer int8"):
        table[name] = {"seconds": times[name]["median_s"], "times_s": times[name]["times_s"]}
    for prefix in ("transformers fp32", "torch dynamic int8"):
        best, t = best_torch(times, prefix)
        table[prefix] = {"seconds": t["median_s"], "times_s": t["times_s"], "threads": int(best.split("@")[1])}
    for row in table.values():
        row["new_tokens_per_s"] = round(new_tokens / row["seconds"], 1)
        row["seconds"] = round(row["seconds"], 4)
    seconds = {name: row["seconds"] for name, row in table.items()}
    info = machine()
    return {
        "machine": info,
        "machine_loaded": info["load_average_1m"] > 0.5 * (info["cores"] or 1),
        "smoke": smoke,
        "model": {**shape, "workdir": str(target.workdir), "step": target.step, "max_len": config.max_len},
        "prompts": int(rows.shape[0]),
        "prompt_tokens": width,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "greedy_agreement_int8_vs_fp32": round(float(np.mean(int8_tokens == fp32_tokens)), 4),
        "transformers_agreement_vs_fp32": round(float(np.mean(theirs == fp32_tokens[:1])), 4),
        "torch_int8_agreement_vs_fp32": round(float(np.mean(theirs_int8 == fp32_tokens[:1])), 4),
        "validation_perplexity": {k: round(v, 4) for k, v in ppl.items()},
        "perplexity_change": round(ppl["int8"] / ppl["fp32"] - 1.0, 5),
        "kernel_bytes": {"int8": stored, "fp32": fp32_bytes, "ratio": round(stored / fp32_bytes, 4)},
        "rows": table,
        "ratios": {
            "int8_vs_transformers_fp32": round(seconds["transformers fp32"] / seconds["jaxformer int8"], 3),
            "int8_vs_torch_dynamic_int8": round(seconds["torch dynamic int8"] / seconds["jaxformer int8"], 3),
            "int8_vs_jaxformer_fp32": round(seconds["jaxformer fp32"] / seconds["jaxformer int8"], 3),
        },
    }


def print_report(results: dict[str, Any]) -> None:
    info = results["machine"]
    flag = " (machine loaded: timings noisy)" if results["machine_loaded"] else ""
    print(f"CPU: {info['cpu']}, {info['cores']} cores, load {info['load_average_1m']}{flag}; {info['date']}")
    print(f"batch 1, {results['prompt_tokens']}-token prompt, {results['new_tokens']} new tokens, medians")
    for name, row in results["rows"].items():
        threads = f" ({row['threads']} torch threads)" if "threads" in row else ""
        print(f"  {name:20s} {row['new_tokens_per_s']:9.1f} tokens/s  {row['seconds']:.4f} s{threads}")
    ppl = results["validation_perplexity"]
    print(
        f"greedy agreement int8 vs fp32 {results['greedy_agreement_int8_vs_fp32']:.4f} over {results['prompts']} "
        f"prompts; validation perplexity fp32 {ppl['fp32']} int8 {ppl['int8']} "
        f"(change {100 * results['perplexity_change']:+.3f} %); kernel bytes ratio {results['kernel_bytes']['ratio']}"
    )
    print("ratios: " + ", ".join(f"{k} {v}x" for k, v in results["ratios"].items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/jaxformer-int8"), help="the run trained here")
    parser.add_argument("--data", type=Path, default=DATA, help="directory holding tinyshakespeare's input.txt")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    if not (args.data / "input.txt").is_file():
        parser.exit(2, f"error: {args.data / 'input.txt'} not found; pass --data DIR (tinyshakespeare's input.txt)\n")
    results = run(args.workdir, args.data, args.steps, new_tokens=args.new_tokens, repeats=args.repeats)
    results["command"] = "python -m benchmarks.int8_decode " + " ".join(argv if argv is not None else sys.argv[1:])
    print_report(results)
    print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
