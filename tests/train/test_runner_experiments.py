"""The other shipped experiments run, shrunk by overrides: the encoder-only classifier and the character-level
GPT on the shared tinyshakespeare text (experiments/default.py is covered by tests/train/test_runner.py)."""

from __future__ import annotations

import json

from support.train_runs import SMALL_MODEL, train


def test_classify_majority_trains_and_reports_eval_accuracy(tmp_path):
    run = train(
        "classify_majority.py",
        tmp_path,
        *SMALL_MODEL,
        "--config.train.steps=8",
        "--config.train.batch_size=16",
        "--config.train.warmup_steps=2",
        "--config.train.log_every=4",
        "--config.train.eval_every=8",
        "--config.data.num_eval_examples=64",
        "--config.checkpoint.every=0",
    )
    model_config = json.loads((tmp_path / "model_config.json").read_text())
    assert model_config["family"] == "encoder_only" and model_config["encoder_head"] == "classification"
    assert model_config["num_classes"] == 2  # majority: more digits >= 5 than < 5, or not
    (last,) = run.eval_records()
    assert last["step"] == 8 and 0.0 <= last["eval_accuracy"] <= 1.0
    assert [r["step"] for r in run.train_records()] == [4, 8]


def test_shakespeare_char_trains_from_the_shared_text_file(tmp_path, shared_data):
    text_file = shared_data / "tinyshakespeare" / "input.txt"
    run = train(
        "shakespeare_char.py",
        tmp_path,
        *SMALL_MODEL,
        f"--config.data.train_path={text_file}",
        "--config.model.max_len=33",
        "--config.data.max_length=33",
        "--config.train.steps=4",
        "--config.train.batch_size=8",
        "--config.train.warmup_steps=1",
        "--config.train.log_every=2",
        "--config.train.eval_every=4",
        "--config.train.eval_batches=2",
        "--config.train.num_samples=1",
        "--config.checkpoint.every=0",
    )
    characters = len(set(text_file.read_text()))
    model_config = json.loads((tmp_path / "model_config.json").read_text())
    assert model_config["family"] == "decoder_only" and model_config["vocab_size"] >= characters
    assert [r["step"] for r in run.train_records()] == [2, 4]
    (last,) = run.eval_records()
    assert 0.0 < last["eval_loss"] < 20.0
    assert "  prompt: " in run.stdout and "  model: " in run.stdout  # a sampled continuation at the evaluation
