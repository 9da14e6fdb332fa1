"""SIGKILL a training subprocess after a given checkpoint, and compare its resumed metrics with a reference run's."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path


def logged(workdir: Path) -> dict[tuple[int, str], list[float]]:
    """(step, metric) -> every value logged for it (a resumed run logs the steps after its checkpoint
    again; a line cut by SIGKILL is skipped; wall-clock speeds are left out, they differ by nature)."""
    values: dict[tuple[int, str], list[float]] = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for key, value in record.items():
            if key not in ("step", "tokens_per_sec", "step_time"):
                values.setdefault((record["step"], key), []).append(value)
    return values


def kill_after_checkpoint(
    proc: subprocess.Popen, workdir: Path, step: int, last_step: int, timeout: float = 600
) -> None:
    """SIGKILL `proc` as soon as `workdir` holds checkpoint `step`; asserts it had not reached `last_step`."""
    deadline = time.monotonic() + timeout
    while not (workdir / "checkpoints" / str(step)).is_dir():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no checkpoint {step} after {timeout} s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.communicate()
    assert not (workdir / "checkpoints" / str(last_step)).exists(), "the run finished before the kill"


def assert_bit_identical(reference: Path, resumed: Path) -> dict[tuple[int, str], list[float]]:
    """Every (step, metric) of the resumed workdir, each time it was logged, equals the reference's exactly."""
    want, got = logged(reference), logged(resumed)
    assert set(got) == set(want)
    for key, values in got.items():
        assert all(v == want[key][0] for v in values), (key, values, want[key])
    return want
