"""Tiny trained runs shared by test_inference.py and test_demo.py.

Each run is trained once per test session (in process, through `jaxformer train`) into a
directory under pytest's base temp dir; a lock file keeps parallel workers (pytest -n 2)
from training the same run twice, and a DONE marker lets the other test module reuse it.

    reverse   experiments/tiny_reverse.py (reverse digits, encoder-decoder), 3-5 digits, trained
              until greedy decoding reverses held-out strings exactly
    charlm    a 1-layer char-level decoder-only LM on a small text file (a few steps)
    classify  experiments/classify_majority.py (encoder-only classifier, a few steps)
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from support.train_runs import train

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 30
QUIET = ("--config.train.progress=False", "--config.train.num_samples=0", "--config.train.eval_every=0")

RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reverse": (
        "tiny_reverse.py",
        ("--config.train.log_every=100", "--config.checkpoint.every=0"),
    ),
    "charlm": (
        "shakespeare_char.py",
        (
            "--config.model.d_model=32",
            "--config.model.num_heads=2",
            "--config.model.d_ff=48",
            "--config.model.num_layers=1",
            "--config.model.max_len=40",
            "--config.model.dropout_rate=0.0",
            "--config.model.attention_dropout_rate=0.0",
            "--config.data.max_length=24",
            "--config.train.steps=30",
            "--config.train.batch_size=8",
            "--config.train.warmup_steps=3",
            "--config.train.log_every=10",
            "--config.checkpoint.every=0",
        ),
    ),
    "classify": (
        "classify_majority.py",
        (
            "--config.model.d_model=32",
            "--config.model.num_heads=2",
            "--config.model.d_ff=48",
            "--config.model.num_layers=1",
            "--config.data.num_eval_examples=32",
            "--config.train.steps=10",
            "--config.train.batch_size=16",
            "--config.train.warmup_steps=2",
            "--config.train.log_every=10",
            "--config.checkpoint.every=0",
        ),
    ),
}


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers' base temps share this session's parent
        base = base.parent
    root = base / "inference-runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def trained_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """The workdir of run `name`, training it first unless this session already did."""
    experiment, overrides = RUNS[name]
    root = _shared_root(tmp_path_factory)
    workdir = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (workdir / "DONE").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            extra: tuple[str, ...] = ()
            if name == "charlm":
                text = root / "text.txt"
                text.write_text(TEXT, encoding="utf-8")
                extra = (f"--config.data.train_path={text}",)
            train(experiment, workdir, *QUIET, *overrides, *extra)
            (workdir / "DONE").write_text("trained\n")
    return workdir
