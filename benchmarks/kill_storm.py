"""Kill storm: SIGKILL a training subprocess at random moments, resume it each time, compare with a clean run.

    python benchmarks/kill_storm.py --kills 20 [--steps 300] [--every 3] [--seed 0] [--root DIR]

A reference run trains a tiny synthetic experiment uninterrupted. The storm run trains the same
experiment with `jaxformer train` and is killed with SIGKILL `--kills` times: some kills land during
start-up (restore, compilation); the others, half and half, a random delay (0 .. window s) after a
random number (1 .. 2 * every + 1) of new logged steps (often while a save is being written) or after
the run finalized a new checkpoint (so the next run resumes from it). After every kill each finalized
checkpoint must pass its checksum manifest, and no resumed run may report a damaged checkpoint.
Finally the storm run is allowed to finish; its final parameters must be bit-identical to the
reference run's, and every loss it logged must equal the reference loss of that step.

Prints one JSON summary; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

SMOKE = REPO_ROOT / "experiments" / "smoke.py"


def cli_train(experiment: Path, workdir: Path, *overrides: str) -> list[str]:
    """The `jaxformer train` command line (this interpreter) for `experiment` in `workdir`."""
    command = [sys.executable, "-m", "jaxformer.cli", "train", "--config", str(experiment), "--workdir", str(workdir)]
    return [*command, *overrides]


def train_command(workdir: Path, steps: int, every: int) -> list[str]:
    """experiments/smoke.py trained into `workdir` for `steps` steps, a checkpoint every `every`, the last 2 kept."""
    overrides = (
        "--config.seed=7",
        "--config.train.warmup_steps=5",
        f"--config.train.steps={steps}",
        f"--config.checkpoint.every={every}",
        "--config.checkpoint.keep=2",
    )
    return cli_train(SMOKE, workdir, *overrides)


def subprocess_env(cache_dir: Path) -> dict[str, str]:
    """CPU only; a shared persistent compilation cache keeps each restart's start-up short."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=python_path)
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def read_losses(workdir: Path) -> tuple[dict[int, list[float]], int]:
    """step -> every training loss logged for it (a resumed run logs some steps twice), and unreadable lines."""
    losses: dict[int, list[float]] = {}
    unreadable = 0
    path = workdir / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            unreadable += 1  # a line cut by SIGKILL mid-write
            continue
        if "loss" in record:
            losses.setdefault(int(record["step"]), []).append(record["loss"])
    return losses, unreadable


def damaged_steps(workdir: Path) -> list[str]:
    """Every finalized step directory that fails its manifest, with the reason."""
    from jaxformer.train import integrity

    problems = []
    checkpoints = workdir / "checkpoints"
    for step_dir in sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []:
        if step_dir.name.isdigit():
            problem = integrity.verify(step_dir)
            if problem is not None:
                problems.append(f"step {step_dir.name}: {problem}")
    return problems


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _latest_finalized(checkpoints: Path) -> int:
    steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.is_dir() else []
    return max(steps, default=0)


def _wait_until(ready: Any, proc: subprocess.Popen, timeout: float) -> bool:
    """True once `ready()`; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.005)
    raise TimeoutError(f"no training progress within {timeout:.0f} s")


def run_storm(
    kills: int,
    steps: int,
    every: int,
    seed: int,
    root: Path,
    startup_fraction: float = 0.2,
    window: float = 0.4,
    log: Any = print,
) -> dict[str, Any]:
    """Run the reference and the storm in `root`; return a summary whose "ok" says whether every check passed."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(root / "jax_cache")
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    started = time.perf_counter()

    reference = root / "reference"
    with open(logs / "reference.txt", "w") as out:
        rc = subprocess.run(
            train_command(reference, steps, every), env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0:
        raise RuntimeError(f"reference run failed (exit {rc}); see {logs / 'reference.txt'}")
    reference_seconds = time.perf_counter() - started

    storm = root / "storm"
    metrics = storm / "metrics.jsonl"
    done, kill_log, problems = 0, [], []
    cycle = 0
    while done < kills:
        cycle += 1
        lines_before, saved_before = _lines(metrics), _latest_finalized(storm / "checkpoints")
        log_path = logs / f"storm-{cycle:03d}.txt"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(train_command(storm, steps, every), env=env, stdout=out, stderr=subprocess.STDOUT)
            draw = rng.random()
            phase = "startup" if draw < startup_fraction else "steps" if draw < (1 + startup_fraction) / 2 else "saved"
            if phase == "startup":  # restoring or compiling
                ready = None
                time.sleep(rng.uniform(0.0, 3.0))
            elif phase == "steps":  # a few steps in: often while a save is being written
                new_steps = rng.randint(1, 2 * every + 1)
                ready = lambda: _lines(metrics) >= lines_before + new_steps  # noqa: E731
            else:  # just after this run finalized a checkpoint: the next resume starts from it
                ready = lambda: _latest_finalized(storm / "checkpoints") > saved_before  # noqa: E731
            if ready is not None and _wait_until(ready, proc, timeout=300):
                time.sleep(rng.uniform(0.0, window))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            rc = proc.wait()
        text = log_path.read_text(encoding="utf-8", errors="replace")
        if "damaged" in text or "Traceback" in text:
            problems.append(f"cycle {cycle}: the run reported: {text[-600:]}")
        if rc != -signal.SIGKILL:
            if rc != 0:
                problems.append(f"cycle {cycle}: exit status {rc}, see {log_path}")
            log(f"cycle {cycle}: the run finished before the kill (exit {rc}); stopping after {done} kills")
            break
        done += 1
        bad = damaged_steps(storm)
        problems.extend(f"after kill {done}: {b}" for b in bad)
        resumed = [line for line in text.splitlines() if line.startswith("Resumed from")]
        started_as = resumed[0] if resumed else "no resume message (fresh start, or killed before restoring)"
        kill_log.append({"kill": done, "phase": phase, "resumed": started_as})
        log(f"kill {done}/{kills} ({phase}); {kill_log[-1]['resumed']}; finalized steps ok: {not bad}")

    with open(logs / "storm-final.txt", "w") as out:
        rc = subprocess.run(
            train_command(storm, steps, every), env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    final_text = (logs / "storm-final.txt").read_text(encoding="utf-8", errors="replace")
    if rc != 0 or "damaged" in final_text:
        problems.append(f"final run: exit {rc}: {final_text[-600:]}")
    summary = _compare(reference, storm, steps)
    summary.update(
        kills=done,
        kills_by_phase={name: sum(1 for k in kill_log if k["phase"] == name) for name in ("startup", "steps", "saved")},
        resumes_from_checkpoint=sum(1 for k in kill_log if k["resumed"].startswith("Resumed")),
        problems=problems + summary.pop("problems"),
        reference_seconds=round(reference_seconds, 1),
        total_seconds=round(time.perf_counter() - started, 1),
        kill_log=kill_log,
    )
    summary["ok"] = not summary["problems"] and summary["params_identical"] and summary["losses_identical"]
    return summary


def _compare(reference: Path, storm: Path, steps: int) -> dict[str, Any]:
    import jax
    import numpy as np

    from jaxformer.train.checkpoint import restore_params

    problems = []
    want, _ = restore_params(reference, step=steps)
    got, _ = restore_params(storm, step=steps)
    same = jax.tree.structure(want) == jax.tree.structure(got) and all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=False)
    )
    ref_losses, _ = read_losses(reference)
    storm_losses, unreadable = read_losses(storm)
    mismatched = sorted(
        step for step, values in storm_losses.items() if any(v != ref_losses.get(step, [None])[0] for v in values)
    )
    missing = sorted(set(ref_losses) - set(storm_losses))
    if mismatched:
        problems.append(f"losses differ from the reference at steps {mismatched[:20]}")
    return {
        "params_identical": bool(same),
        "losses_identical": not mismatched,
        "steps_logged": len(storm_losses),
        "steps_logged_more_than_once": sum(1 for v in storm_losses.values() if len(v) > 1),
        "steps_missing_from_log": missing,
        "unreadable_log_lines": unreadable,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver (default 20)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the experiment")
    parser.add_argument("--every", type=int, default=3, help="checkpoint every N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--window", type=float, default=0.4, help="max seconds between visible progress and the kill")
    parser.add_argument("--root", type=Path, default=None, help="working directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.root is None:
        import tempfile

        args.root = Path(tempfile.mkdtemp(prefix="kill_storm_"))
    summary = run_storm(args.kills, args.steps, args.every, args.seed, args.root, window=args.window)
    summary["root"] = str(args.root)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
