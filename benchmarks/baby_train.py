"""nanoGPT's CPU "baby GPT" on tinyshakespeare: jaxformer's `train` path vs a plain PyTorch loop, one process.

    python -m benchmarks.baby_train [--json benchmarks/results/baby_train_cpu.json] [--torch-steps 300]
                                    [--config.train.steps=N ...]

* jaxformer: `experiments/shakespeare_baby.py` run through `train_and_evaluate`, the function
  `jaxformer train` calls (start-up, compile, data, evaluation, samples and checkpoints all
  included). Reports the wall time from the call to the first evaluation record with
  eval_loss <= TARGET_LOSS (metrics.jsonl is watched while the run goes), the total wall time,
  the final validation loss and the median step time (median of the logged windows' mean step
  time, the first window, which holds the compile, left out).
* PyTorch: `transformers.GPT2LMHeadModel` of the same shape (4 layers, 4 heads, 128 wide,
  block 64, the char vocabulary), `torch.optim.AdamW` (b2 0.99, weight decay 0.1, eps 1e-8),
  the same warm-up + cosine schedule and global-norm clip 1.0, batch 12 of random 64-char windows
  of the same text; each step timed to completion, median after a warm-up. Run at torch's default
  thread count and at 1 thread (`common.torch_thread_counts`: on a loaded machine torch's OpenMP
  regions stall); the ratio uses the faster, the JSON keeps both.
* alternating: both loops' steps again, in alternating rounds (20 jaxformer steps as its training
  loop runs them, then 20 torch steps, 8 times; medians over rounds). The two rows above run one
  after the other, minutes apart; on a machine whose speed drifts (a shared VM) this row is the
  side-by-side ratio.
* nanoGPT: not installable from a package registry, so its figure is quoted from issue 23
  (measured there, not here): NANOGPT below.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baby_step_split import EXPERIMENT, baby_runtime, fed_steps
from benchmarks.common import StealMeter, machine, save_json, torch_thread_counts
from jaxformer import experiment
from jaxformer.distributed import set_cpu_device_count
from jaxformer.train.loop import train_and_evaluate

TARGET_LOSS = 1.886
NANOGPT = {
    "source": "issue 23 (quoted, not re-measured here)",
    "command": (
        "python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 "
        "--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
        "--lr_decay_iters=2000 --dropout=0.0"
    ),
    "machine": "AMD EPYC (avx512_bf16), idle",
    "date": "2026-12-02",
    "wall_s": 88.0,
    "val_loss_at_2000": 1.8857,
    "step_ms": 40.0,
}
TARGET_STEP_RATIO, TARGET_WALL_RATIO, TARGET_TORCH_SPEEDUP = 0.7, 0.7, 1.5


class EvalWatcher:
    """Polls `workdir/metrics.jsonl` in a thread; remembers when eval_loss first reached `target`."""

    def __init__(self, workdir: Path, target: float, start: float, period_s: float = 0.02) -> None:
        self.path, self.target, self.start, self.period = workdir / "metrics.jsonl", target, start, period_s
        self.reached: tuple[int, float, float] | None = None  # (step, eval_loss, seconds since start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.reached is None:
            self.check()
            self._stop.wait(self.period)

    def check(self) -> None:
        if self.reached is not None or not self.path.is_file():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line being written
                continue
            if "eval_loss" in record and record["eval_loss"] <= self.target:
                self.reached = (record["step"], record["eval_loss"], time.perf_counter() - self.start)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.check()  # the last record, in case it landed after the last poll


def run_jaxformer(overrides: list[str], workdir: Path) -> dict[str, Any]:
    """The experiment through `train_and_evaluate` (what `jaxformer train` runs), timed from the call."""
    config = experiment.load(EXPERIMENT, ["train.progress=False", "train.num_samples=0", *overrides])
    exp = experiment.validate(config)
    start = time.perf_counter()
    watcher = EvalWatcher(workdir, TARGET_LOSS, start)
    try:
        last = train_and_evaluate(exp, workdir)
    finally:
        wall = time.perf_counter() - start
        watcher.stop()
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["step_time"] for r in records if "step_time" in r][1:]  # the first window holds the compile
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    return {
        "steps": exp.train.steps,
        "wall_s": round(wall, 2),
        "wall_to_target_s": None if watcher.reached is None else round(watcher.reached[2], 2),
        "target_step": None if watcher.reached is None else watcher.reached[0],
        "median_step_ms": round(1000 * statistics.median(windows), 2) if windows else None,
        "final_val_loss": round(float(last.get("eval_loss", math.nan)), 4),
        "eval_losses": [[s, round(v, 4)] for s, v in evals],
    }


def torch_loop(exp: experiment.Experiment, text_ids: np.ndarray, threads: int) -> Callable[[], tuple[float, float]]:
    """A plain PyTorch loop over GPT2LMHeadModel of the experiment's shape: a function running one step
    (batch, forward, backward, clip, AdamW, schedule) and returning (wall seconds, loss)."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m, t = exp.model, exp.train
    block = exp.data.max_length - 1
    vocab = int(text_ids.max()) + 1
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=block, n_embd=m.d_model, n_layer=m.num_layers, n_head=m.num_heads,
        n_inner=m.d_ff, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t.learning_rate, betas=(t.b1, t.b2), eps=t.eps, weight_decay=t.weight_decay
    )

    def factor(step: int) -> float:  # linear warm-up, then cosine to end_learning_rate_ratio of the peak
        if step < t.warmup_steps:
            return step / max(t.warmup_steps, 1)
        progress = min(1.0, (step - t.warmup_steps) / max(t.steps - t.warmup_steps, 1))
        end = t.end_learning_rate_ratio
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    data = torch.from_numpy(text_ids.astype(np.int64))
    generator = torch.Generator().manual_seed(0)

    def step() -> tuple[float, float]:
        torch.set_num_threads(threads)  # another loop of this process may have changed it
        begin = time.perf_counter()
        starts = torch.randint(len(data) - block - 1, (t.batch_size,), generator=generator)
        x = torch.stack([data[s : s + block] for s in starts])
        y = torch.stack([data[s + 1 : s + 1 + block] for s in starts])
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        value = float(loss.detach())
        return time.perf_counter() - begin, value

    return step


def run_torch(
    exp: experiment.Experiment, text_ids: np.ndarray, steps: int, threads: int, warmup: int = 10
) -> dict[str, Any]:
    """`torch_loop` for warmup + steps steps; its median step time after the warm-up."""
    step = torch_loop(exp, text_ids, threads)
    times, losses = zip(*(step() for _ in range(steps + warmup)), strict=True)
    return {
        "steps_timed": steps,
        "threads": threads,
        "median_step_ms": round(1000 * statistics.median(times[warmup:]), 2),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
    }


def interleaved_steps(
    exp: experiment.Experiment,
    overrides: list[str],
    text_ids: np.ndarray,
    threads: int,
    rounds: int = 8,
    steps: int = 20,
) -> dict[str, Any]:
    """Both loops' steps in alternating rounds in this process (jaxformer's as its training loop runs
    them, from the same experiment and pipeline), so a load that comes and goes hits both alike:
    the median over rounds of each round's mean step time. `exp`: the experiment with `overrides`."""
    torch_step = torch_loop(exp, text_ids, threads)
    ours: list[float] = []
    theirs: list[float] = []
    with baby_runtime(list(overrides)) as (runtime, state, batches):
        jax_steps = fed_steps(runtime, state, batches)
        jax_steps(5)  # compile and warm up both
        for _ in range(5):
            torch_step()
        for _ in range(rounds):
            ours.append(jax_steps(steps))
            theirs.append(statistics.fmean(torch_step()[0] for _ in range(steps)))
    jax_ms, torch_ms = 1000 * statistics.median(ours), 1000 * statistics.median(theirs)
    return {
        "rounds": rounds,
        "steps_per_round": steps,
        "torch_threads": threads,
        "jaxformer_step_ms": round(jax_ms, 2),
        "torch_step_ms": round(torch_ms, 2),
        "speedup_vs_torch_loop": round(torch_ms / jax_ms, 3),
        "jaxformer_rounds_ms": [round(1000 * v, 2) for v in ours],
        "torch_rounds_ms": [round(1000 * v, 2) for v in theirs],
    }


def char_ids(exp: experiment.Experiment) -> np.ndarray:
    """The training text as ids of its sorted character set (the vocabulary size the models see)."""
    text = Path(exp.data.train_path).read_text(encoding="utf-8")
    chars = sorted(set(text))
    table = {c: i for i, c in enumerate(chars)}
    return np.array([table[c] for c in text], np.int32)


def summarise(jax_row: dict[str, Any], torch_row: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {
        "step_vs_nanogpt": round(jax_row["median_step_ms"] / NANOGPT["step_ms"], 3)
        if jax_row["median_step_ms"]
        else None,
        "wall_to_target_vs_nanogpt": round(jax_row["wall_to_target_s"] / NANOGPT["wall_s"], 3)
        if jax_row["wall_to_target_s"]
        else None,
        "speedup_vs_torch_loop": round(torch_row["median_step_ms"] / jax_row["median_step_ms"], 3)
        if jax_row["median_step_ms"]
        else None,
    }
    ratios["targets"] = {
        "step_vs_nanogpt": f"<= {TARGET_STEP_RATIO}",
        "wall_to_target_vs_nanogpt": f"<= {TARGET_WALL_RATIO}",
        "speedup_vs_torch_loop": f">= {TARGET_TORCH_SPEEDUP}",
    }
    return ratios


def run(overrides: list[str], torch_steps: int, workdir: Path | None = None, **interleave: int) -> dict[str, Any]:
    """The whole comparison; `interleave`: rounds / steps of `interleaved_steps`."""
    exp = experiment.validate(experiment.load(EXPERIMENT, list(overrides)))
    set_cpu_device_count(exp.mesh.cpu_devices)  # before machine() starts JAX, as `jaxformer train` does
    host = machine()
    steal = StealMeter()
    print(f"CPU: {host['cpu']} ({host['cores']} cores, load {host['load_average_1m']})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        jax_row = run_jaxformer(list(overrides), Path(workdir or tmp) / "baby")
    print(
        f"jaxformer: wall {jax_row['wall_s']} s, to eval_loss <= {TARGET_LOSS}: {jax_row['wall_to_target_s']} s "
        f"(step {jax_row['target_step']}), median step {jax_row['median_step_ms']} ms, "
        f"final val {jax_row['final_val_loss']}",
        flush=True,
    )
    by_threads = {n: run_torch(exp, char_ids(exp), torch_steps, n) for n in torch_thread_counts()}
    for row in by_threads.values():
        print(f"PyTorch loop ({row['threads']} threads): median step {row['median_step_ms']} ms", flush=True)
    torch_row = min(by_threads.values(), key=lambda row: row["median_step_ms"])  # the peer at its better setting
    ratios = summarise(jax_row, torch_row)
    alternating = interleaved_steps(exp, list(overrides), char_ids(exp), torch_row["threads"], **interleave)
    print(
        f"alternating rounds ({alternating['rounds']} x {alternating['steps_per_round']} steps each): jaxformer "
        f"{alternating['jaxformer_step_ms']} ms, PyTorch loop {alternating['torch_step_ms']} ms per step, "
        f"{alternating['speedup_vs_torch_loop']}x",
        flush=True,
    )
    print(
        f"nanoGPT (quoted, {NANOGPT['machine']}, {NANOGPT['date']}): {NANOGPT['wall_s']} s, "
        f"{NANOGPT['step_ms']} ms/step, val {NANOGPT['val_loss_at_2000']}",
        flush=True,
    )
    print(f"ratios: {json.dumps({k: v for k, v in ratios.items() if k != 'targets'})}", flush=True)
    host["cpu_steal_percent"] = steal.percent()  # the hypervisor's share of this VM's CPU during the run
    print(f"CPU time taken by the hypervisor (steal) during the run: {host['cpu_steal_percent']} %", flush=True)
    return {"machine": host, "experiment": str(EXPERIMENT.name), "overrides": list(overrides),
            "jaxformer": jax_row, "torch_loop": torch_row,
            "torch_loop_by_threads": list(by_threads.values()), "alternating": alternating,
            "nanogpt": NANOGPT, "ratios": ratios}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", default=None, help="write the results here (e.g. benchmarks/results/baby_train_cpu.json)"
    )
    parser.add_argument("--torch-steps", type=int, default=300)
    parser.add_argument("--label", default="", help="a note stored with the results (e.g. 'loaded: 3 other jobs')")
    args, rest = parser.parse_known_args(argv)
    overrides = [a.removeprefix("--config.") for a in rest]
    results = run(overrides, args.torch_steps)
    results["label"] = args.label
    if args.json:
        print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
