"""Compile time, step time and peak memory vs depth, with the layers scanned (`nn.scan`) and unrolled.

    python -m benchmarks.scaling [--depths 2 6 12 24] [--vocab 8192] [--steps 3] [--json OUT]

Model: the GPT-2 layout of `benchmarks.compare` (width 384, 6 heads, FFN 1536, sequence 256,
batch 8, AdamW train step) at each depth, `scan_layers=True` and `False`; vocabulary 8192 by
default (the 50257 head would only add a depth-independent cost to every step). Each setting
runs in a fresh subprocess, so compile caches and peak memory start from nothing:

* trace + lower s: Python tracing of the train step and lowering to StableHLO;
* XLA compile s: `Lowered.compile()`; compile s is their sum (what a user waits for);
* step s: median of `--steps` steps after one warm-up step;
* peak memory: the process's peak RSS (`resource.getrusage`) on CPU — it includes the
  Python/JAX baseline, printed beside it — or `memory_stats()["peak_bytes_in_use"]` on GPU/TPU.

Must show: compile time of the deepest scanned model <= 1.3x that of the shallowest scanned one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, save_json

WIDTH, HEADS, LENGTH, BATCH = 384, 6, 256, 8
COMPILE_RATIO_LIMIT = 1.3


def measure(
    layers: int,
    scan: bool,
    vocab: int,
    steps: int,
    width: int = WIDTH,
    heads: int = HEADS,
    length: int = LENGTH,
    batch: int = BATCH,
) -> dict[str, Any]:
    """One setting, in this process: compile and step times, peak memory."""
    from benchmarks.common import bench_config, jaxformer_trainer, peak_rss_mib

    baseline_mib = peak_rss_mib()
    config = bench_config(layers=layers, width=width, heads=heads, length=length, vocab=vocab, scan_layers=scan)
    trainer = jaxformer_trainer(config=config, batch=batch)
    start = time.perf_counter()
    lowered = trainer.jitted.lower(trainer.state, trainer.batch)
    lowered_at = time.perf_counter()
    trainer.compiled = lowered.compile()
    compiled_at = time.perf_counter()
    trainer.step()  # warm-up
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - began)
    result = {
        "layers": layers,
        "scan_layers": scan,
        "trace_lower_s": round(lowered_at - start, 3),
        "xla_compile_s": round(compiled_at - lowered_at, 3),
        "compile_s": round(compiled_at - start, 3),
        "step_s": round(statistics.median(times), 4),
        "step_times_s": [round(t, 4) for t in times],
        "tokens_per_s": round(trainer.tokens_per_step / statistics.median(times), 1),
    }
    result.update(memory(baseline_mib))
    return result


def memory(baseline_mib: float) -> dict[str, Any]:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    import jax

    from benchmarks.common import peak_rss_mib

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"memory": "device peak_bytes_in_use", "peak_memory_mib": round(stats["peak_bytes_in_use"] / 2**20, 1)}
    return {
        "memory": "process peak RSS",
        "peak_memory_mib": round(peak_rss_mib(), 1),
        "baseline_rss_mib": round(baseline_mib, 1),
    }


def run_setting(layers: int, scan: bool, vocab: int, steps: int) -> dict[str, Any]:
    """`measure` in a fresh Python process; its JSON is the last line of the child's stdout."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--one", str(layers), str(int(scan))]
    command += ["--vocab", str(vocab), "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"setting layers={layers} scan={scan} failed (exit {done.returncode}): {tail[0]}")
    return json.loads(lines[-1])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Compile-time ratios deepest/shallowest for scanned and unrolled stacks, and the must-show check."""
    out: dict[str, Any] = {}
    for scan, name in ((True, "scanned"), (False, "unrolled")):
        chosen = sorted((r for r in rows if r["scan_layers"] == scan), key=lambda r: r["layers"])
        if len(chosen) >= 2:
            low, high = chosen[0], chosen[-1]
            out[f"compile_ratio_{name}"] = round(high["compile_s"] / low["compile_s"], 3)
            out[f"compile_ratio_{name}_layers"] = [low["layers"], high["layers"]]
    if "compile_ratio_scanned" in out:
        out["scanned_within_limit"] = out["compile_ratio_scanned"] <= COMPILE_RATIO_LIMIT
    return out


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    header = f"{'layers':>6} | {'scan':>5} | {'trace+lower s':>13} | {'XLA compile s':>13} | {'compile s':>9} | {'step s':>7} | {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['layers']:>6} | {r['scan_layers']!s:>5} | {r['trace_lower_s']:>13.2f} | {r['xla_compile_s']:>13.2f} | "
            f"{r['compile_s']:>9.2f} | {r['step_s']:>7.3f} | {r['peak_memory_mib']:>8.0f}"
        )
    if rows and "baseline_rss_mib" in rows[0]:
        print(
            f"(peak memory = process peak RSS; a fresh process's baseline before the model: {rows[0]['baseline_rss_mib']:.0f} MiB)"
        )
    for name in ("scanned", "unrolled"):
        key = f"compile_ratio_{name}"
        if key in summary:
            low, high = summary[f"{key}_layers"]
            print(f"ratio compile {name} {high}/{low} layers = {summary[key]:.2f}")
    if "scanned_within_limit" in summary:
        verdict = "yes" if summary["scanned_within_limit"] else "NO"
        print(f"scanned compile ratio <= {COMPILE_RATIO_LIMIT}: {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 6, 12, 24])
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up)")
    parser.add_argument("--scan", choices=["both", "on", "off"], default="both")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--one", nargs=2, type=int, metavar=("LAYERS", "SCAN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # child process: one setting, JSON on the last stdout line
        print(json.dumps(measure(args.one[0], bool(args.one[1]), args.vocab, args.steps)))
        return
    scans = {"both": [True, False], "on": [True], "off": [False]}[args.scan]
    rows = []
    for scan in scans:
        for layers in args.depths:
            rows.append(run_setting(layers, scan, args.vocab, args.steps))
            print(f"done: layers {layers}, scan {scan}: compile {rows[-1]['compile_s']:.1f}s", flush=True)
    summary = summarize(rows)
    print_table(rows, summary)
    if args.json:
        shape = {"width": WIDTH, "heads": HEADS, "length": LENGTH, "batch": BATCH, "vocab": args.vocab}
        print(f"wrote {save_json(args.json, {'machine': machine(), 'shape': shape, 'rows': rows, 'summary': summary})}")


if __name__ == "__main__":
    main()
