"""What asynchronous checkpointing costs: mean train-step time with a save every N steps vs without.

    python benchmarks/checkpoint_overhead.py [--every 10] [--steps 100] [--rounds 3] [--d-model 256] ...

A decoder-only model is trained on fixed random tokens with the single-device runtime. Rounds
alternate between "no saving", "async save every N steps" and "synchronous save every N steps"
(so machine noise hits all alike); every step is timed to completion (block_until_ready), the
save call included. Prints one JSON record: mean step times, the ratios to "no saving", the
state size and how long a save blocks the training thread vs takes in total.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from jaxformer import models, presets
from jaxformer.config import CheckpointConfig
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.state import init_state
from jaxformer.train.step import make_train_step


def build(args: argparse.Namespace) -> tuple[Any, Any, dict[str, np.ndarray]]:
    config = presets.get(
        "tiny-gpt2",
        d_model=args.d_model,
        num_heads=args.heads,
        d_ff=4 * args.d_model,
        num_layers=args.layers,
        vocab_size=args.vocab,
        max_len=args.length,
    )
    tx = optax.adamw(1e-4)
    step = jax.jit(make_train_step(models.build(config), config, tx, lambda s: 1e-4), donate_argnums=(0,))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, args.vocab, size=(args.batch, args.length), dtype=np.int32)
    batch = {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "weights": np.ones(tokens.shape, np.float32)}
    state = init_state(config, tx, jax.random.PRNGKey(0))
    return state, step, batch


def run_round(state: Any, step: Any, batch: Any, steps: int, checkpointer: Checkpointer | None, every: int, start: int):
    """Train `steps` steps; returns (state, per-step seconds, seconds each save call blocked)."""
    times, blocked = [], []
    for i in range(start + 1, start + steps + 1):
        began = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        if checkpointer is not None and i % every == 0:
            save_began = time.perf_counter()
            checkpointer.save(i, state, {"position": i}, {"benchmark": True})
            blocked.append(time.perf_counter() - save_began)
        times.append(time.perf_counter() - began)
    if checkpointer is not None:
        checkpointer.wait()  # the last save finishes inside its round (counted in the wall-clock ratio)
    return state, times, blocked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=10, help="save every N steps")
    parser.add_argument("--steps", type=int, default=100, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (alternating)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args(argv)

    state, step, batch = build(args)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    state, _, _ = run_round(state, step, batch, 5, None, args.every, 0)  # compile + warm up
    root = Path(tempfile.mkdtemp(prefix="ckpt_overhead_"))
    modes = {"none": None, "async": True, "sync": False}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    blocked: dict[str, list[float]] = {mode: [] for mode in modes}
    totals: dict[str, float] = {mode: 0.0 for mode in modes}
    position = 5
    for round_index in range(args.rounds):
        for mode, async_save in modes.items():
            checkpointer = None
            if async_save is not None:
                checkpointer = Checkpointer(
                    root / f"{mode}-{round_index}", CheckpointConfig(keep=2, async_save=async_save)
                )
            began = time.perf_counter()
            state, round_times, round_blocked = run_round(
                state, step, batch, args.steps, checkpointer, args.every, position
            )
            totals[mode] += time.perf_counter() - began
            if checkpointer is not None:
                checkpointer.close()
            position += args.steps
            times[mode].extend(round_times)
            blocked[mode].extend(round_blocked)
    mean = {mode: statistics.fmean(values) for mode, values in times.items()}
    record = {
        "device": str(jax.devices()[0]),
        "state_megabytes": round(state_bytes / 2**20, 2),
        "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "save_every": args.every,
        "steps_measured_per_mode": len(times["none"]),
        "mean_step_seconds": {mode: round(value, 5) for mode, value in mean.items()},
        "median_step_seconds": {mode: round(statistics.median(values), 5) for mode, values in times.items()},
        "ratio_async_vs_none": round(mean["async"] / mean["none"], 3),
        "ratio_sync_vs_none": round(mean["sync"] / mean["none"], 3),
        "wall_ratio_async_vs_none (incl. final wait)": round(totals["async"] / totals["none"], 3),
        "mean_save_call_blocks_seconds": {
            mode: round(statistics.fmean(values), 4) for mode, values in blocked.items() if values
        },
    }
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
