"""A checkpoint save the disk refuses (full, read-only, no permission), through the real CLI in a subprocess.

The faults come from the LD_PRELOAD shim of support/fault_fs.py, so they hit the same libc calls a
full or read-only disk would (tensorstore's array writes included). Each must end the run with one
line (exit 2) naming the workdir, what a save needs and what is free; no Orbax traceback or log; the
half-written step removed; the previous step intact (its checksum manifest verifies) and resumed from.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jax
import numpy as np
import pytest
from support.fault_fs import fault_env, one_error_line, run_cli
from support.paths import REPO_ROOT

from jaxformer.train import integrity
from jaxformer.train.checkpoint import restore_params

SMOKE = str(REPO_ROOT / "experiments" / "smoke.py")
RUN = ("--config.train.steps=6", "--config.checkpoint.every=2", "--config.train.log_every=2")


def train(workdir: Path, faults: dict[str, str] | None = None):
    return run_cli("train", "--config", SMOKE, "--workdir", str(workdir), *RUN, faults=faults)


def step_dirs(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "checkpoints").iterdir() if not p.name.startswith("."))


def same_params(a: object, b: object) -> bool:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


def assert_refused_cleanly(done, workdir: Path, *fragments: str) -> str:
    assert done.returncode == 2, done.stderr[-4000:]
    line = one_error_line(done.stderr, *fragments)
    assert "step 2" in line and "is kept" in line, line
    assert "Traceback" not in done.stdout + done.stderr and "ERROR:absl" not in done.stderr
    assert step_dirs(workdir) == ["2"]  # step 4 was never renamed into place; its partial directory is gone
    assert integrity.verify(workdir / "checkpoints" / "2") is None  # every byte as sealed at save time
    return line


@pytest.mark.slow  # ~15-20 s on 2 cores; run with -m slow
def test_full_disk_keeps_the_last_checkpoint_and_says_how_much_space(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    faults = fault_env(workdir / "checkpoints", "ENOSPC", after=workdir / "checkpoints" / "2")
    done = train(workdir, faults)
    line = assert_refused_cleanly(done, workdir, "no space left", "needs about", "are free", str(workdir.resolve()))
    on_disk = sum(f.stat().st_size for f in (workdir / "checkpoints" / "2").rglob("*") if f.is_file())
    assert f"{on_disk:,} bytes" in line  # the size of the last complete step, measured
    kept, _ = restore_params(workdir, 2)

    resumed = train(workdir)  # the disk has room again: the same command resumes from step 2
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Resumed from checkpoint step 2" in resumed.stdout
    assert step_dirs(workdir) == ["2", "4", "6"]
    assert same_params(kept, restore_params(workdir, 2)[0])


@pytest.mark.slow  # two subprocess runs; the same errno table is covered by tests/cli/test_cli_oserrors.py
@pytest.mark.parametrize(("kind", "what"), [("EROFS", "read-only file system"), ("EACCES", "permission denied")])
def test_read_only_or_forbidden_checkpoints_directory(tmp_path: Path, kind: str, what: str) -> None:
    workdir = tmp_path / "run"
    done = train(workdir, fault_env(workdir / "checkpoints", kind, after=workdir / "checkpoints" / "2"))
    assert_refused_cleanly(done, workdir, what, "--workdir", str(workdir.resolve() / "checkpoints"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_checkpoints_directory_made_read_only_after_the_first_save(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    first = run_cli("train", "--config", SMOKE, "--workdir", str(workdir), *RUN[1:], "--config.train.steps=2")
    assert first.returncode == 0, first.stderr[-4000:]
    checkpoints = workdir / "checkpoints"
    checkpoints.chmod(0o555)
    try:
        done = train(workdir)
        assert_refused_cleanly(done, workdir, "permission denied", str(checkpoints.resolve()))
    finally:
        checkpoints.chmod(stat.S_IRWXU)


@pytest.mark.slow
def test_resume_after_a_full_disk_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    workdir, reference = tmp_path / "run", tmp_path / "reference"
    faults = fault_env(workdir / "checkpoints", "ENOSPC", after=workdir / "checkpoints" / "2")
    assert train(workdir, faults).returncode == 2
    assert train(workdir).returncode == 0
    assert train(reference).returncode == 0
    assert same_params(restore_params(workdir, 6)[0], restore_params(reference, 6)[0])
