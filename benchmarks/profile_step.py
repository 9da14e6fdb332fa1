"""Where a train step's time goes: a `jax.profiler` trace of the jitted step, summed per HLO op and per part.

    python -m benchmarks.profile_step [--scan] [--dtype float32|bfloat16] [--vocab 50257] [--layers 6]
                                      [--steps 2] [--option XLA_OPTION=VALUE ...] [--json OUT]

Model and batch are those of `benchmarks.compare` (GPT-2 shape: 6 layers, width 384, 6 heads,
sequence 256, batch 8, AdamW). The step is compiled (with any `--option` as XLA compiler
options, e.g. xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT), run once, then
traced for `--steps` steps (`jax.profiler.trace` with a Perfetto JSON). Every executed XLA op
(a fusion, a library call, a copy) is matched to the `op_name` metadata of the compiled HLO and
counted in a part of the model (LM head, loss + accuracy, attention, MLP, norms, embeddings,
optimizer, other) and a kind (matmul, library reduce, copy/transpose, elementwise/reduce).
Prints a part x kind table in milliseconds per step and the top ops; can write JSON.

Caveat: a thunk the runtime runs asynchronously (e.g. an Eigen dot beside a YNNPACK one) shows
only its launch; its time lands in the ops it overlaps with. Totals per step stay right.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import jax

from benchmarks.common import GPT2_SHAPE, jaxformer_trainer, save_json

# (part, regex on the op_name metadata); the first match wins. The loss is traced outside the model
# ("jvp()"); the optimizer update's ops sit at the top level of the step ("jit(step)/mul").
PARTS: tuple[tuple[str, str], ...] = (
    ("LM head (tied logits)", r"lm_head|attend|tied_logits"),
    ("loss + accuracy", r"jvp\(\)|cross_entropy|log_softmax"),
    ("attention core", r"dot_product_attention|softmax|bkgts|btkgh"),
    ("attention projections", r"self_attention/"),
    ("MLP", r"/mlp/"),
    ("norms + residual", r"_norm/|final_norm|_sublayer"),
    ("embeddings", r"embed|positions"),
    ("optimizer + grad norm", r"adam|optax|apply_updates|global_norm|scale_by|^jit\(\w+\)/[\w\-]+$"),
)


KINDS = ("matmul", "library reduce", "copy/transpose", "elementwise/reduce")


def kind_of(instruction: str, op_name: str = "") -> str:
    """What an executed op is, from its HLO instruction name and op_name.

    XLA:CPU hands dots (and some reductions) to a library (YNNPACK/Eigen: "ynn_fusion", "dot");
    the rest are XLA's own loop fusions.
    """
    if instruction.startswith(("ynn_fusion", "dot", "custom-call", "onednn", "xnn_fusion")):
        return "matmul" if "dot_general" in op_name or instruction.startswith("dot") else "library reduce"
    if "copy" in instruction or "transpose" in instruction:
        return "copy/transpose"
    return "elementwise/reduce"


def hlo_computations(hlo_text: str) -> dict[str, list[str]]:
    """Computation name -> its lines (header first) in compiled HLO text; lines before any header under ""."""
    computations: dict[str, list[str]] = {}
    name = ""
    for line in hlo_text.splitlines():
        header = re.match(r"\s*(?:ENTRY\s+)?%([\w.\-]+) \(.*\{\s*$", line)
        if header:
            name = header.group(1)
        computations.setdefault(name, []).append(line)
    return computations


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its op_name metadata.

    A fusion that lost its metadata takes the first op_name found inside the computation it calls.
    """
    names: dict[str, str] = {}
    calls: dict[str, str] = {}
    bodies: dict[str, list[str]] = {}
    for computation, lines in hlo_computations(hlo_text).items():
        for line in lines:
            match = re.match(r"\s*(?:ROOT\s+)?%([\w.\-]+) = ", line)
            if not match:
                continue
            meta = re.search(r'op_name="([^"]*)"', line)
            names[match.group(1)] = meta.group(1) if meta else ""
            if meta:
                bodies.setdefault(computation, []).append(meta.group(1))
            called = re.search(r"calls=%([\w.\-]+)", line)
            if called:
                calls[match.group(1)] = called.group(1)
    for name, op_name in names.items():
        if not op_name and bodies.get(calls.get(name, "")):
            names[name] = bodies[calls[name]][0]
    return names


def part_of(op_name: str) -> str:
    for part, pattern in PARTS:
        if re.search(pattern, op_name):
            return part
    return "other"


def trace_ops(trace_dir: Path) -> dict[str, float]:
    """Total microseconds per executed op name in the newest Perfetto trace under `trace_dir`."""
    files = sorted(trace_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise RuntimeError(f"no Perfetto trace was written under {trace_dir}")
    events = json.loads(gzip.decompress(files[-1].read_bytes()))["traceEvents"]
    totals: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("ph") == "X":
            totals[event["name"]] += float(event.get("dur", 0.0))
    return totals


def profile_train_step(
    dtype: str = "float32",
    vocab: int = GPT2_SHAPE["vocab"],
    layers: int = GPT2_SHAPE["layers"],
    steps: int = 2,
    compiler_options: dict[str, str] | None = None,
    **shape: Any,
) -> dict[str, Any]:
    """Trace `steps` train steps; returns {"parts": {part: ms/step}, "kinds": ..., "ops": [...], ...}."""
    trainer = jaxformer_trainer(dtype=dtype, vocab=vocab, layers=layers, **shape)
    trainer.compiler_options = compiler_options
    names = op_names(trainer.compiled_text())
    trainer.step()  # warm up
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(steps):
                trainer.step()
        totals = trace_ops(Path(tmp))
    ops = []
    for name, micros in totals.items():
        if name in names:  # XLA ops only; runtime and Python events have no HLO name
            ops.append((name, part_of(names[name]), micros / 1e3 / steps, names[name]))
    ops.sort(key=lambda op: -op[2])
    parts: dict[str, float] = collections.defaultdict(float)
    kinds: dict[str, float] = collections.defaultdict(float)
    table: dict[str, dict[str, float]] = collections.defaultdict(lambda: dict.fromkeys(KINDS, 0.0))
    for name, part, ms, op_name in ops:
        kind = kind_of(name, op_name)
        parts[part] += ms
        kinds[kind] += ms
        table[part][kind] += ms
    return {
        "dtype": dtype,
        "vocab": vocab,
        "layers": layers,
        "scan_layers": trainer.config.scan_layers,
        "steps_traced": steps,
        "compiler_options": compiler_options or {},
        "ops_ms_per_step": round(sum(parts.values()), 1),
        "parts": {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
        "kinds": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "part_by_kind": {p: {k: round(v, 1) for k, v in row.items()} for p, row in table.items()},
        "ops": [
            {"op": n, "part": p, "kind": kind_of(n, o), "ms": round(ms, 2), "op_name": o[-120:]}
            for n, p, ms, o in ops[:60]
        ],
    }


def print_profile(result: dict[str, Any], top: int = 15) -> None:
    total = result["ops_ms_per_step"]
    options = " ".join(f"{k}={v}" for k, v in result["compiler_options"].items()) or "default XLA options"
    print(
        f"profile: {result['dtype']}, vocab {result['vocab']}, {result['layers']} layers (scan {result['scan_layers']}), {options}; XLA ops {total:.0f} ms/step"
    )
    print(f"  {'ms per step':<24} {'total':>8} " + " ".join(f"{k:>18}" for k in KINDS))
    for part, ms in result["parts"].items():
        cells = " ".join(f"{result['part_by_kind'][part][k]:>18.1f}" for k in KINDS)
        print(f"  {part:<24} {ms:>8.1f} {cells}")
    print(f"  {'all':<24} {total:>8.1f} " + " ".join(f"{result['kinds'].get(k, 0.0):>18.1f}" for k in KINDS))
    print("  top ops:")
    for op in result["ops"][:top]:
        print(f"    {op['ms']:>9.1f} ms  {op['part']:<22} {op['kind']:<18} {op['op']:<28} {op['op_name'][-60:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--vocab", type=int, default=GPT2_SHAPE["vocab"])
    parser.add_argument("--layers", type=int, default=GPT2_SHAPE["layers"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--scan", action="store_true", help="scan_layers=True (nn.scan over the layers)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an XLA compiler option")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    bad = [item for item in args.option if "=" not in item]
    if bad:
        parser.error(f"--option takes KEY=VALUE, got {bad[0]!r}")
    options = dict(item.split("=", 1) for item in args.option)
    result = profile_train_step(args.dtype, args.vocab, args.layers, args.steps, options, scan_layers=args.scan)
    print_profile(result)
    if args.json:
        save_json(args.json, result)


if __name__ == "__main__":
    main()
