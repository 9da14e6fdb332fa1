"""Can XLA:CPU keep a bf16 matmul in bf16, and what does each dot path cost? (issue 23, bf16 training)

    python -m benchmarks.bf16_dots [--json benchmarks/results/bf16_dots_cpu.json] [--shape M K N ...]

For each XLA:CPU dot path (per-jit `compiler_options`, so nothing leaks into other programs) and
each precision -- fp32; bf16 operands with a bf16 result; bf16 operands accumulated into an f32
result (`preferred_element_type=f32`, what mixed-precision training asks for) -- this reports:

* GFLOP/s (median of `repeats`, after a warm-up call), beside torch's fp32 and bf16 matmul of the
  same shape in the same process;
* `dot_operands`: the element types the dots in the *optimized* HLO read. "bf16" means the
  product runs on bf16 inputs; "f32" means XLA inserted converts and the product runs in fp32
  (bf16 then only saves memory, and pays for the conversions);
* the largest error against a float64 NumPy product of the same (rounded) inputs, relative to
  the largest |entry|, so a path that silently lost precision shows.

The paths are XLA:CPU debug options of this jaxlib (their names and enum values are XLA's):
"default" (YNNPACK dot fusions), "eigen" (library fusions off: XLA's own emitter / Eigen),
"onednn" and "xnnpack" (that library's dot fusion instead of YNNPACK's), and "onednn rewriter"
(`xla_cpu_use_onednn`). They mean nothing on GPU/TPU, where bf16 dots are native; the
library applies none of them by default (see PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, save_json

PATHS: dict[str, dict[str, Any]] = {
    "default": {},
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "onednn": {
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    },
    "xnnpack": {
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    },
    "onednn rewriter": {"xla_cpu_use_onednn": True},
}
# name -> (operand dtype, preferred_element_type)
PRECISIONS: dict[str, tuple[Any, Any]] = {
    "fp32": (jnp.float32, None),
    "bf16": (jnp.bfloat16, None),
    "bf16 -> f32": (jnp.bfloat16, jnp.float32),
}
# (M, K, N): the benchmark GPT-2 shape's MLP up-projection (8 x 256 tokens, 384 -> 1536), and GPT-2 small's.
SHAPES: list[tuple[int, int, int]] = [(2048, 384, 1536), (2048, 768, 3072)]
HEADER = re.compile(r"^(?:ENTRY )?%?[\w.-]+ \((.*)\) -> ")  # a computation: "%name (p: bf16[2,3], ...) -> f32[..] {"
HEADER_PARAM = re.compile(r"([\w.-]+): (\w+)\[")
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.-]+) = (\w+)\[")
DOT_OPERANDS = re.compile(r"\bdot\(%([\w.-]+), %([\w.-]+)\)")


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dot_operand_types(hlo_text: str) -> list[str]:
    """The operand element types of every `dot` in an HLO module's text, e.g. ["bf16,bf16"].

    Operands are printed by name, so names are resolved to their element types within each
    computation (its parameters from the header, then its instructions in order)."""
    types: dict[str, str] = {}
    found = set()
    for line in hlo_text.splitlines():
        header = HEADER.match(line)
        if header:
            types = dict(HEADER_PARAM.findall(header.group(1)))
            continue
        instruction = INSTRUCTION.match(line)
        if instruction:
            types[instruction.group(1)] = instruction.group(2)
        dot = DOT_OPERANDS.search(line)
        if dot:
            found.add(",".join(types.get(name, "?") for name in dot.groups()))
    return sorted(found)


def jax_row(shape: tuple[int, int, int], options: dict[str, Any], precision: str, repeats: int) -> dict[str, Any]:
    m, k, n = shape
    dtype, preferred = PRECISIONS[precision]
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), np.float32), dtype)
    b = jnp.asarray(rng.standard_normal((k, n), np.float32), dtype)
    try:
        compiled = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=preferred)).lower(a, b).compile(options)
    except Exception as error:  # an option this jaxlib does not know: recorded, not fatal
        return {"error": str(error).splitlines()[0][:200]}
    seconds = median_seconds(lambda: compiled(a, b).block_until_ready(), repeats)
    want = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    got = np.asarray(compiled(a, b), np.float64)
    return {
        "gflops": float(f"{2 * m * k * n / seconds / 1e9:.3g}"),  # 3 significant digits: a tiny product stays > 0
        "dot_operands": dot_operand_types(compiled.as_text()),
        "relative_error": float(np.abs(got - want).max() / np.abs(want).max()),
    }


def torch_row(shape: tuple[int, int, int], repeats: int) -> dict[str, float]:
    import torch

    m, k, n = shape
    row = {}
    for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        row[name] = round(2 * m * k * n / median_seconds(lambda: a @ b, repeats) / 1e9, 1)
    return row


def run(shapes: list[tuple[int, int, int]], repeats: int = 7, paths: list[str] | None = None) -> dict[str, Any]:
    host = machine()
    print(f"CPU: {host['cpu']} (family/model {host['cpu_family_model']}, {host['matmul_isa']})", flush=True)
    results: dict[str, Any] = {"machine": host, "repeats": repeats, "shapes": {}}
    for shape in shapes:
        key = "x".join(map(str, shape))
        rows = {
            path: {p: jax_row(shape, PATHS[path], p, repeats) for p in PRECISIONS} for path in (paths or list(PATHS))
        }
        results["shapes"][key] = {"jax": rows, "torch": torch_row(shape, repeats)}
        for path, row in rows.items():
            cells = [f"{p} {r.get('gflops', 'n/a')} ({';'.join(r.get('dot_operands', []))})" for p, r in row.items()]
            print(f"{key} {path:16s} " + " | ".join(cells), flush=True)
        print(f"{key} torch            {results['shapes'][key]['torch']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, action="append", metavar=("M", "K", "N"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run([tuple(s) for s in args.shape] if args.shape else SHAPES, args.repeats)
    if args.json:
        print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
