"""Issue 20: NaN never reaches a checkpoint; a diverging loss is flagged (warn) or stops the run (stop)."""

from __future__ import annotations

import pytest

from jaxformer import cli


def _train(capsys, workdir, *extra: str) -> tuple[int, str, str]:
    code = cli.main(["train", "--config", "experiments/smoke.py", "--workdir", str(workdir), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_nonfinite_state_is_never_saved(capsys, tmp_path):
    # checkpoint.every < log_every: before issue 20 a NaN state was saved between two log points.
    code, _, err = _train(capsys, tmp_path, "--config.train.learning_rate=1e30", "--config.train.grad_clip=0.0",
                          "--config.train.warmup_steps=3", "--config.train.log_every=10",
                          "--config.checkpoint.every=1")  # fmt: skip
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "NaN/inf at step" in line and "nothing non-finite was saved" in line, err
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    bad = int(line.split("NaN/inf at step ")[1].split()[0].rstrip(";"))
    assert all(s < bad for s in steps)
    assert (f"step {steps[-1]}" in line) if steps else ("there is no checkpoint" in line)


@pytest.mark.slow  # ~15-20 s on 2 cores; run with -m slow
def test_divergence_warns_and_stop_stops(capsys, tmp_path):
    options = ("--config.train.learning_rate=1e4", "--config.train.grad_clip=0.0", "--config.train.warmup_steps=0",
               "--config.train.divergence_factor=2.0")  # fmt: skip
    code, _, err = _train(capsys, tmp_path / "warn", *options)
    if code == 0:
        assert "diverging" in err and "this run diverged" in err, err
    else:  # it went non-finite before the loss was logged twice: also a loud failure
        assert "NaN/inf" in err
    code, _, err = _train(capsys, tmp_path / "stop", *options, "--config.train.on_divergence=stop")
    assert code == 2 and ("on_divergence='stop'" in err or "NaN/inf" in err), err
