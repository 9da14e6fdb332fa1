"""The fault-injection script's promise: every bad input or fault is one clear line, a clean stop, or the
promised warning; no traceback, no silent wrong result, no hang. Slow (about 70 subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.paths import REPO_ROOT


@pytest.mark.slow
def test_fault_injection_has_no_traceback_silent_result_or_hang(tmp_path) -> None:
    out = tmp_path / "faults.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fault_injection", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    report = json.loads(out.read_text())
    bad = [r for r in report["results"] if not r["ok"]]
    assert report["summary"]["cases"] >= 60
    assert not bad, done.stdout[-6000:]
    assert done.returncode == 0
