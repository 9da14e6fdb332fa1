"""The experiment runner end to end, in process through `jaxformer.cli.main` (what `jaxformer train` runs).

experiments/default.py runs with small overrides (a narrow one-layer model, 30 steps) so the module stays
short; `test_default_experiment_reaches_99_percent` (slow) runs it as shipped, as a user does. The other
shipped experiments are run in tests/train/test_runner_experiments.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.train_runs import EXPERIMENTS, REPO_ROOT, SMALL_MODEL, Run, train
from tensorboardX.proto import event_pb2

from jaxformer.train.metrics import MetricsWriter, read_metrics

# experiments/default.py cut to ~20 s of CPU: 30 steps, records every 5, evaluations at 15 and 30.
SMALL_DEFAULT = (
    *SMALL_MODEL,
    "--config.model.num_decoder_layers=1",
    "--config.train.steps=30",
    "--config.train.batch_size=16",
    "--config.train.warmup_steps=5",
    "--config.train.log_every=5",
    "--config.train.eval_every=15",
    "--config.train.num_samples=2",
    "--config.data.num_eval_examples=64",
    "--config.checkpoint.every=15",
)
TRAIN_KEYS = {"step", "loss", "accuracy", "perplexity", "learning_rate", "grad_norm", "tokens_per_sec", "step_time"}
EVAL_KEYS = {"eval_loss", "eval_accuracy", "eval_perplexity"}
SPEED_KEYS = {"tokens_per_sec", "step_time"}  # wall-clock measurements: differ between identical runs


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in SPEED_KEYS} for r in records]


@pytest.mark.slow  # ~28 s; run-to-run determinism is also what the default kill -9 resume test compares bit for bit
def test_same_command_twice_gives_identical_loss_curves_and_a_complete_workdir(tmp_path):
    a = train("default.py", tmp_path / "a", *SMALL_DEFAULT)
    b = train("default.py", tmp_path / "b", *SMALL_DEFAULT)
    losses_a = [r["loss"] for r in a.train_records()]
    losses_b = [r["loss"] for r in b.train_records()]
    assert len(losses_a) == 6 and len(set(losses_a)) > 1  # six records, and the model did train
    assert losses_a == losses_b  # exact float equality, not a tolerance
    assert comparable(a.records) == comparable(b.records)  # every other logged number too
    assert [r["step"] for r in a.eval_records()] == [15, 30]
    check_workdir(a)
    check_console(a)


def check_workdir(run: Run) -> None:
    """config.json, model_config.json, metrics.jsonl in the documented format, TensorBoard events."""
    config = json.loads((run.workdir / "config.json").read_text())
    assert config["train"]["steps"] == 30 and config["model"]["d_model"] == 32  # overrides are recorded
    model_config = json.loads((run.workdir / "model_config.json").read_text())
    assert model_config["family"] == "encoder_decoder" and model_config["d_model"] == 32
    assert model_config["vocab_size"] == 13  # digits tokenizer: pad, bos, eos + 10 digits

    train_records, eval_records = run.train_records(), run.eval_records()
    assert [r["step"] for r in train_records] == [5, 10, 15, 20, 25, 30]
    for record in train_records:
        assert set(record) == TRAIN_KEYS
        assert record["perplexity"] == pytest.approx(math.exp(record["loss"]), rel=1e-9)
        assert 0.0 <= record["accuracy"] <= 1.0 and record["tokens_per_sec"] > 0 and record["step_time"] > 0
    for record in eval_records:
        assert set(record) >= EVAL_KEYS and 0.0 <= record["eval_accuracy"] <= 1.0
    assert len(run.records) == len(train_records) + len(eval_records)

    events = sorted((run.workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list((run.workdir / "tensorboard").iterdir())
    scalars = tensorboard_scalars(events)
    assert [step for step, _ in scalars["loss"]] == [5, 10, 15, 20, 25, 30]
    for (_, value), record in zip(scalars["loss"], train_records, strict=True):
        assert value == pytest.approx(record["loss"], rel=1e-6)  # stored as float32
    assert [step for step, _ in scalars["eval_accuracy"]] == [15, 30]


def tensorboard_scalars(paths: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] read from TFRecord event files (uint64 length, crc, Event proto, crc)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in paths:
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def check_console(run: Run) -> None:
    """A progress bar with elapsed<remaining time, speed and the latest metrics; samples at each evaluation."""
    assert re.search(r"train:\s+\d+%\|.*\| \d+/30 \[\d\d:\d\d<\d\d:\d\d", run.stderr), run.stderr[-2000:]
    assert re.search(r"(step/s|s/step)", run.stderr)
    assert "loss=" in run.stderr
    console = run.stdout + run.stderr
    samples = re.findall(r"input: '(\d+)'\n\s+reference: '(\d+)'\n\s+model: '(\d*)'", console)
    assert len(samples) >= 2 * 2, console[-2000:]  # num_samples=2 at each of the two evaluations
    for source, reference, _ in samples:
        assert reference == source[::-1]  # the task: reverse the digits
    assert "Finished: eval_loss=" in run.stdout


@pytest.mark.slow  # ~28 s; the default kill -9 resume test resumes and compares every step
def test_resume_from_an_earlier_checkpoint_logs_each_step_once(tmp_path):
    first = train("default.py", tmp_path, *SMALL_DEFAULT)
    # As if the run had died after logging step 30 but before its checkpoint 30 was written:
    shutil.rmtree(tmp_path / "checkpoints" / "30")
    resumed = train("default.py", tmp_path, *SMALL_DEFAULT)
    assert "Resumed from checkpoint step 15" in resumed.stdout
    assert [r["step"] for r in resumed.train_records()] == [5, 10, 15, 20, 25, 30]  # 20..30 replaced, not appended
    assert [r["step"] for r in resumed.eval_records()] == [15, 30]
    assert comparable(resumed.records) == comparable(first.records)  # and the resumed curve is the same


def test_metrics_writer_drops_records_after_the_start_step(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (5, 10, 15, 20)]
    lines.insert(3, json.dumps({"step": 15, "eval_loss": 0.5}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 25, "lo')  # torn last line
    writer = MetricsWriter(tmp_path, total_steps=30, initial_step=15, progress=False)
    writer.write(20, {"loss": 0.25})
    writer.close()
    assert read_metrics(tmp_path) == [
        {"step": 5, "loss": 0.2},
        {"step": 10, "loss": 0.1},
        {"step": 15, "loss": 1.0 / 15},
        {"step": 15, "eval_loss": 0.5},
        {"step": 20, "loss": 0.25},
    ]


def tensorboard_events(logdir: Path) -> list[Any]:
    """Every event in the TFRecord event files under `logdir`, oldest file first."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4  # length, its crc, the record, its crc
    return events


def test_resumed_run_purges_its_replaced_tensorboard_steps(tmp_path):
    """After a resume from step 15 the second event file starts with TensorBoard's purge marker at step 16."""
    first = MetricsWriter(tmp_path, total_steps=30, progress=False)
    for step in (10, 20):
        first.write(step, {"loss": 1.0 / step})
    first.close()
    resumed = MetricsWriter(tmp_path, total_steps=30, initial_step=15, progress=False)
    resumed.write(20, {"loss": 0.5})
    resumed.close()
    events = tensorboard_events(tmp_path / "tensorboard")
    starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [16]  # the first writer (no resume) writes none
    losses = [(e.step, v.simple_value) for e in events for v in e.summary.value if v.tag == "loss"]
    assert losses == [(10, pytest.approx(0.1)), (20, pytest.approx(0.05)), (20, pytest.approx(0.5))]


@pytest.mark.slow
def test_default_experiment_reaches_99_percent(tmp_path):
    """Must-show: the shipped default, run as a user runs it, ends with held-out token accuracy >= 0.99."""
    started = time.monotonic()
    workdir = tmp_path / "default"
    config = str(EXPERIMENTS / "default.py")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxformer.cli", "train", "--config", config, "--workdir", str(workdir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    minutes = (time.monotonic() - started) / 60
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [r for r in read_metrics(workdir) if "eval_accuracy" in r]
    print(f"default experiment: {minutes:.1f} min, last eval {evals[-1]}")
    assert evals[-1]["eval_accuracy"] >= 0.99, evals
