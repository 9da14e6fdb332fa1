"""Checkpoint problems as a user meets them through `jaxformer train` / `jaxformer export` (`cli.main`, the
function the `jaxformer` script runs, called in-process to save start-up time): a damaged latest step falls
back with a warning, a different model and no readable step are one-line errors (exit 2, no traceback),
`checkpoint.start_fresh_if_corrupt` starts over, export writes params + config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxformer import cli
from jaxformer.train import checkpoint as ck
from jaxformer.train import integrity

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.py"
SHORT = (
    "--config.train.steps=4",
    "--config.train.batch_size=4",
    "--config.train.warmup_steps=1",
    "--config.checkpoint.every=2",
)


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(capsys, *args: str) -> Result:
    capsys.readouterr()
    returncode = cli.main(list(args))
    captured = capsys.readouterr()
    return Result(returncode, captured.out, captured.err)


def garble_largest(step_dir: Path) -> None:
    target = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x5A
    target.write_bytes(bytes(data))


def error_line(result: Result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow  # over 20 s on 2 cores; run in the full suite (-m slow)
def test_damage_mismatch_fresh_start_and_export(tmp_path, capsys):
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    train = ("train", "--config", str(SMOKE), "--workdir", str(workdir), *SHORT)

    first = run_cli(capsys, *train)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit()) == ["2", "4"]

    # The latest step is garbled: warn naming it, resume from step 2, train to 4 again.
    garble_largest(checkpoints / "4")
    again = run_cli(capsys, *train)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoint step 4" in again.stderr and "checksum mismatch" in again.stderr
    assert f"Resumed from checkpoint step 2 in {checkpoints.resolve() / '2'}" in again.stdout
    assert (workdir / ck.CORRUPT_DIRNAME / "4").is_dir()
    assert integrity.verify(checkpoints / "4") is None  # saved again, intact

    # A different model: one line naming parameter paths and both shapes.
    mismatch = error_line(run_cli(capsys, *train, "--config.model.d_model=40", "--config.train.steps=6"))
    assert "different model" in mismatch and "checkpoint (" in mismatch and "vs model (" in mismatch
    assert "36" in mismatch and "40" in mismatch

    # Nothing readable left: a clear stop by default ...
    garble_largest(checkpoints / "2")
    garble_largest(checkpoints / "4")
    stop = error_line(run_cli(capsys, *train, "--config.train.steps=6"))
    assert "no readable checkpoint" in stop and "start_fresh_if_corrupt" in stop
    # ... or a fresh start when the config allows it.
    fresh = run_cli(capsys, *train, "--config.checkpoint.start_fresh_if_corrupt=True")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "starting from scratch" in fresh.stderr and "Resumed" not in fresh.stdout
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit()) == ["2", "4"]

    # Export: params-only checkpoint + model_config.json, equal to the trained params.
    out = tmp_path / "export"
    exported = run_cli(capsys, "export", "--workdir", str(workdir), "--out", str(out))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert f"step 4 to {out}" in exported.stdout
    assert json.loads((out / "model_config.json").read_text())["d_model"] == 36
    params, model_config = ck.restore_params(out)
    trained, trained_config = ck.restore_params(workdir)
    assert model_config == trained_config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
