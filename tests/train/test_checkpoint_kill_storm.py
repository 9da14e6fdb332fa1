"""Kill storm (benchmarks/kill_storm.py) with 5 SIGKILLs: resumes every time, never leaves an unreadable
checkpoint, and ends with parameters and logged losses bit-identical to an uninterrupted run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import kill_storm  # noqa: E402


@pytest.mark.slow  # over 20 s on 2 cores; run in the full suite (-m slow)
def test_kill_storm_five_kills(tmp_path):
    summary = kill_storm.run_storm(kills=5, steps=60, every=2, seed=1, root=tmp_path, window=0.2, log=print)
    assert summary["kills"] == 5, summary
    assert summary["problems"] == [], summary["problems"]
    assert summary["params_identical"] and summary["losses_identical"], summary
    assert summary["resumes_from_checkpoint"] >= 1, summary["kill_log"]
    assert summary["ok"]
