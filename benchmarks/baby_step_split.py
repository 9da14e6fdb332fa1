"""Where the baby-GPT loop's step time goes: the compiled step alone vs the step fed by the data pipeline.

    python -m benchmarks.baby_step_split [--steps 100] [--config.KEY=VALUE ...]

Builds `experiments/shakespeare_baby.py`'s runtime exactly as `train_and_evaluate` does (same
pipeline, optimizer, jit and donation) and times, in one process:

* fixed: the jitted train step on one batch already on the device, each step waited for;
* fed: the step as the training loop runs it (`next(batches)`, `put_batch`, dispatch), waited for
  only at the end, as the loop waits only every `log_every` steps;
* fetch: `next(batches)` alone.

fed - fixed is the loop's per-step overhead; fixed is the compiled step. The loop's other costs
(evaluation, checkpoints, logging) happen every 50-250 steps and show in `benchmarks.baby_train`'s
wall time, not here. Medians and means of wall time: on a shared machine compare rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

from jaxformer import experiment
from jaxformer.data import build_pipeline
from jaxformer.distributed import set_cpu_device_count
from jaxformer.train.loop import model_config_for
from jaxformer.train.optim import make_optimizer
from jaxformer.train.runtime import check_parallelism, make_runtime

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "shakespeare_baby.py"


@contextlib.contextmanager
def baby_runtime(overrides: list[str]) -> Iterator[tuple[Any, Any, Iterator[Any]]]:
    """(runtime, initial state, train batches) of the experiment, built as `train_and_evaluate` builds them."""
    exp = experiment.validate(experiment.load(EXPERIMENT, ["train.progress=False", *overrides]))
    set_cpu_device_count(exp.mesh.cpu_devices)  # before the first device use, as `jaxformer train` does
    sizes = check_parallelism(exp, exp.model)
    with tempfile.TemporaryDirectory() as workdir:
        pipeline = build_pipeline(
            exp.data,
            family=exp.model.family,
            batch_size=exp.train.batch_size,
            seed=exp.seed,
            workdir=workdir,
            process_index=0,
            process_count=1,
        )
        model_config = model_config_for(exp, pipeline.vocab_size, pipeline.num_classes)
        tx, schedule = make_optimizer(exp.train, model_config.d_model)
        runtime = make_runtime(exp, model_config, tx, schedule, sizes)
        yield runtime, runtime.init_state(jax.random.PRNGKey(exp.seed)), pipeline.train_batches()


def fed_steps(runtime: Any, state: Any, batches: Iterator[Any]) -> Callable[[int], float]:
    """A function running n steps as the training loop does (fetch, put, dispatch; waited for at the end):
    returns their mean seconds per step. It carries the train state from call to call."""
    carry = {"state": state}

    def run(n: int) -> float:
        begin = time.perf_counter()
        for _ in range(n):
            carry["state"], metrics = runtime.train_step(carry["state"], runtime.put_batch(next(batches)))
        jax.block_until_ready(metrics)
        return (time.perf_counter() - begin) / n

    return run


def split(overrides: list[str], steps: int) -> dict[str, Any]:
    """{"fixed_step_ms", "fed_step_ms", "fetch_ms"} for the experiment with `overrides`."""
    with baby_runtime(overrides) as (runtime, state, batches):
        fixed = runtime.put_batch(jax.device_put(next(batches)))
        for _ in range(5):  # compile and warm up
            state, metrics = runtime.train_step(state, fixed)
        jax.block_until_ready(metrics)
        synced = []
        for _ in range(steps):
            begin = time.perf_counter()
            state, metrics = runtime.train_step(state, fixed)
            jax.block_until_ready(metrics)
            synced.append(time.perf_counter() - begin)
        fed = fed_steps(runtime, state, batches)(steps)
        begin = time.perf_counter()
        for _ in range(steps):
            next(batches)
        fetch = (time.perf_counter() - begin) / steps
    return {
        "fixed_step_ms": round(1e3 * statistics.median(synced), 2),
        "fed_step_ms": round(1e3 * fed, 2),
        "fetch_ms": round(1e3 * fetch, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    args, rest = parser.parse_known_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    print(split([a.removeprefix("--config.") for a in rest], args.steps))


if __name__ == "__main__":
    main()
