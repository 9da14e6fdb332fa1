"""Sampled decoding against `transformers.generate(do_sample=True)` on the same weights, in one process.

    python -m benchmarks.sampling_speed [--quick] [--batches 1 16] [--new-tokens 128] [--repeats 3] [--json OUT]

Shape: the GPT-2 layout of `benchmarks.compare` (6 layers, width 384, 6 heads, vocabulary 50257;
`--quick`: 2 layers, vocabulary 8192, 32 new tokens), random weights, fp32, a random 16-token prompt,
all new tokens generated (no EOS). For each setting both sides decode with the KV cache:
`jaxformer.decoding.generate(method="sample", ...)` vs `GPT2LMHeadModel.generate(do_sample=True, ...)`,
with the same temperature / top-k / top-p (top-k 0 and top-p 1.0 filter nothing on both sides).
Greedy is measured alongside as the floor: a sampled step adds only the draw to the model step.
Random weights give nearly flat next-token distributions, so a top-p 0.9 nucleus spans most of
the vocabulary: the hardest case for nucleus sampling. Timing as in `benchmarks.compare`
(alternating repetitions, medians, torch at its default and at 1 thread, the faster one used).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from benchmarks.common import machine, save_json
from benchmarks.compare import QUICK, SHAPES, compare_decoding

SETTINGS: dict[str, dict[str, Any] | None] = {
    "greedy": None,
    "sample": {"temperature": 1.0},
    "top-k 50": {"top_k": 50},
    "top-p 0.9": {"top_p": 0.9},
}


def run(shape: dict[str, int], batches: list[int], new_tokens: int, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "shape": dict(shape), "repeats": repeats, "rows": []}
    for name, sampling in SETTINGS.items():
        for row in compare_decoding(shape, batches, new_tokens, repeats, sampling):
            results["rows"].append({"setting": name, **row})
    return results


def print_report(results: dict[str, Any]) -> None:
    header = f"{'setting':<10} {'batch':>5} | {'jaxformer ms/tok':>16} | {'transformers ms/tok':>19} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in results["rows"]:
        ms = {side: row[side]["seconds"] / row["new_tokens"] * 1e3 for side in ("jaxformer", "transformers")}
        print(
            f"{row['setting']:<10} {row['batch']:>5} | {ms['jaxformer']:>16.2f} | {ms['transformers']:>19.2f} | "
            f"{row['ratio']:>6.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 layers, vocabulary 8192, 32 new tokens: a smoke run")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, help="new tokens per call (default 128; 32 with --quick)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        parser.exit(2, f"error: benchmarks.sampling_speed needs {' and '.join(missing)}: pip install -e '.[test]'\n")
    shape = dict(QUICK if args.quick else SHAPES["gpt2-6l"])
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    results = run(shape, args.batches, new_tokens, args.repeats)
    print_report(results)
    if args.json:
        print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
