"""End to end through `python -m jaxformer.cli train`: exact resume after SIGKILL, clean stop on SIGTERM/SIGINT.

Every run is a real subprocess on CPU. They share a persistent compilation cache so restarts stay short.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxformer.train import integrity
from jaxformer.train.checkpoint import restore_params

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from kill_storm import cli_train, subprocess_env  # noqa: E402

# experiments/smoke.py with a large final evaluation: it gives the SIGKILL test its time window.
OVERRIDES = ("--config.data.num_eval_examples=2048", "--config.train.eval_batches=0")


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    return subprocess_env(tmp_path_factory.mktemp("jax_cache"))  # CPU, a shared persistent compilation cache


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory) -> Path:
    return REPO_ROOT / "experiments" / "smoke.py"


def train_args(experiment: Path, workdir: Path, *overrides: str) -> list[str]:
    return cli_train(experiment, workdir, *OVERRIDES, *overrides)


def run_train(experiment, workdir, env, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_args(experiment, workdir, *overrides), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def logged(workdir: Path) -> dict[tuple[int, str], list[float]]:
    """(step, metric) -> every value logged for it (a resumed run logs the steps after its checkpoint again)."""
    values: dict[tuple[int, str], list[float]] = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key not in ("step", "tokens_per_sec", "step_time"):  # wall-clock speeds differ by nature
                values.setdefault((record["step"], key), []).append(value)
    return values


def assert_same_params(workdir_a: Path, workdir_b: Path, step: int) -> None:
    params_a, _ = restore_params(workdir_a, step=step)
    params_b, _ = restore_params(workdir_b, step=step)
    assert jax.tree.structure(params_a) == jax.tree.structure(params_b)
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(
                f"training ended (exit {proc.returncode}) before the moment to signal it:\n{err[-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for training progress")
        time.sleep(poll)


def test_sigkill_after_step_10_then_resume_is_bit_identical(tmp_path, experiment_file, cli_env):
    reference = run_train(experiment_file, tmp_path / "reference", cli_env)
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        train_args(experiment_file, workdir),
        cwd=REPO_ROOT,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    step_10 = workdir / "checkpoints" / "10"
    wait_for(step_10.is_dir, proc)  # appears only once written, sealed and renamed (finalized)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.communicate()
    assert not (workdir / "checkpoints" / "20").exists(), (
        "the run finished before the kill; the test needs slower steps"
    )
    assert integrity.verify(step_10) is None

    resumed = run_train(experiment_file, workdir, cli_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from checkpoint step 10 in {step_10}" in resumed.stdout

    assert_same_params(tmp_path / "reference", workdir, step=20)
    want, got = logged(tmp_path / "reference"), logged(workdir)
    assert set(got) == set(want)
    for key, values in got.items():
        assert all(v == want[key][0] for v in values), (key, values, want[key])  # bit-identical floats
    assert {step for step, _ in got} == set(range(1, 21))


@pytest.mark.slow  # ~15-20 s on 2 cores; run with -m slow
def test_sigterm_then_sigint_stop_cleanly_at_the_step_reached(tmp_path, experiment_file, cli_env):
    workdir = tmp_path / "run"
    metrics = workdir / "metrics.jsonl"
    long_run = ("--config.train.steps=100000", "--config.checkpoint.every=100000")

    def reached(n: int):
        return lambda: metrics.is_file() and metrics.read_text().count("\n") >= n

    stops = []
    for sig, min_records in ((signal.SIGTERM, 3), (signal.SIGINT, 1)):
        size_before = metrics.stat().st_size if metrics.is_file() else 0
        proc = subprocess.Popen(
            train_args(experiment_file, workdir, *long_run),
            cwd=REPO_ROOT,
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: reached(1)() and metrics.stat().st_size > size_before and reached(min_records)(), proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        match = re.search(rf"Stopped on {sig.name} after step (\d+); checkpoint saved to (\S+)\. ", out)
        assert match, out + err[-2000:]
        step, path = int(match.group(1)), Path(match.group(2))
        assert path == workdir.resolve() / "checkpoints" / str(step)
        assert integrity.verify(path) is None
        last_logged = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
        assert step == last_logged  # the saved step is the step reached
        assert "Traceback" not in err
        stops.append((step, out))
    first, second = stops
    assert f"Resumed from checkpoint step {first[0]}" in second[1]
    assert second[0] > first[0]
    params, _ = restore_params(workdir)
    assert jax.tree.leaves(params)
