"""Data sources: TFDS (mocked catalog datasets), Hugging Face datasets, local files, synthetic tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxformer.data import DataConfig, DataError, DatasetNotPreparedError, build_pipeline, synthetic


def lm_text_of_record(pipeline, split: str, record: int) -> str:
    """Re-join the LM pieces of one record (consecutive pieces share a token) and decode."""
    examples = pipeline.split_examples(split)
    pieces = [examples.inputs[i] for i in np.flatnonzero(examples.record_index == record)]
    ids = np.concatenate([pieces[0]] + [p[1:] for p in pieces[1:]])
    assert ids[0] == pipeline.tokenizer.bos_id and ids[-1] == pipeline.tokenizer.eos_id
    return pipeline.tokenizer.decode(ids)


# TFDS ------------------------------------------------------------------------
# The TFDS tests take the `tfds` fixture: without tensorflow-datasets they alone skip, not the whole file.


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_tfds_lm_dataset_with_mock_data(tfds):
    config = DataConfig(source="tfds", tfds_name="tiny_shakespeare", task="lm", tokenizer="char", max_length=8)
    with tfds.testing.mock_data(num_examples=6):
        raw = tfds.data_source("tiny_shakespeare", split="train")
        texts = [raw[i]["text"] for i in range(len(raw))]
        pipeline = build_pipeline(config, family="decoder_only", batch_size=4, seed=0)
        batch = next(pipeline.train_batches())
        validation = list(pipeline.eval_batches("validation"))
    texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
    # Every record comes back exactly through pieces of <= 8 + 1 tokens.
    assert [lm_text_of_record(pipeline, "train", r) for r in range(len(texts))] == texts
    assert batch["tokens"].shape == batch["targets"].shape == (4, 8)
    real = batch["weights"] > 0
    np.testing.assert_array_equal(batch["tokens"][:, 1:][real[:, 1:]], batch["targets"][:, :-1][real[:, 1:]])
    assert validation and sum(float(b["weights"].sum()) for b in validation) > 0


def test_tfds_translation_dataset_with_mock_data(tfds):
    config = DataConfig(
        source="tfds",
        tfds_name="wmt14_translate/de-en",
        task="seq2seq",
        source_field="en",
        target_field="de",
        tokenizer="byte",
        max_length=48,
    )
    with tfds.testing.mock_data(num_examples=5):
        pipeline = build_pipeline(config, family="encoder_decoder", batch_size=8, seed=0)  # registers wmt builders
        raw = tfds.data_source("wmt14_translate/de-en", split="validation")
        pairs = [(raw[i]["en"], raw[i]["de"]) for i in range(len(raw))]
        batches = list(pipeline.eval_batches("validation"))
    pairs = [tuple(x.decode() if isinstance(x, bytes) else x for x in p) for p in pairs]
    assert pipeline.examples("validation", 5) == pairs
    (batch,) = batches  # 5 examples in one global batch of 8, three padding rows
    decode = pipeline.tokenizer.decode
    assert [(decode(batch["source"][i]), decode(batch["targets"][i])) for i in range(5)] == pairs
    np.testing.assert_array_equal(batch["weights"][5:], 0.0)
    assert (batch["target_in"][:5, 0] == pipeline.tokenizer.bos_id).all()


def test_tfds_classification_dataset_with_mock_data(tfds):
    config = DataConfig(
        source="tfds", tfds_name="glue/sst2", task="classification", text_field="sentence", tokenizer="byte"
    )
    with tfds.testing.mock_data(num_examples=7):
        pipeline = build_pipeline(config, family="encoder_only", batch_size=4, seed=0)
        batch = next(pipeline.train_batches())
    assert batch["tokens"].shape == (4, 32) and batch["labels"].shape == batch["weights"].shape == (4,)
    assert set(batch["labels"].tolist()) <= {0, 1} and pipeline.num_classes in (1, 2)


def test_tfds_dataset_not_prepared_stops_with_instructions(tfds, tmp_path: Path):
    config = DataConfig(
        source="tfds", tfds_name="tiny_shakespeare", task="lm", tokenizer="char", tfds_data_dir=str(tmp_path)
    )
    with pytest.raises(DatasetNotPreparedError) as info:
        build_pipeline(config, family="decoder_only", batch_size=2, seed=0)
    message = str(info.value)
    assert "not prepared" in message and "tfds build tiny_shakespeare" in message and str(tmp_path) in message
    assert "\n" not in message


def test_tfds_unknown_name_suggests_the_nearest(tfds, tmp_path: Path):
    config = DataConfig(
        source="tfds", tfds_name="tiny_shakespear", task="lm", tokenizer="char", tfds_data_dir=str(tmp_path)
    )
    with pytest.raises(DataError, match="Did you mean 'tiny_shakespeare'"):
        build_pipeline(config, family="decoder_only", batch_size=2, seed=0)


# Hugging Face datasets ------------------------------------------------------------
def test_hf_parquet_file(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    rows = {"text": ["good film", "bad plot", "fine acting!", "dull"], "label": [1, 0, 1, 0]}
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict(rows).to_parquet(str(path))
    config = DataConfig(
        source="hf", hf_path=str(path), task="classification", tokenizer="byte", max_length=16, shuffle=False
    )
    pipeline = build_pipeline(config, family="encoder_only", batch_size=4, seed=0)
    batch = next(pipeline.train_batches())
    assert [pipeline.tokenizer.decode(row) for row in batch["tokens"]] == rows["text"]
    assert batch["labels"].tolist() == rows["label"] and pipeline.num_classes == 2
    assert (batch["tokens"][:, 0] == pipeline.tokenizer.bos_id).all()


def test_hf_save_to_disk_directory(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    train = {"en": ["a cat", "two dogs", "the sun"], "de": ["eine Katze", "zwei Hunde", "die Sonne"]}
    validation = {"en": ["a dog"], "de": ["ein Hund"]}
    dataset = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(train), "validation": datasets.Dataset.from_dict(validation)}
    )
    dataset.save_to_disk(str(tmp_path / "saved"))
    config = DataConfig(
        source="hf",
        hf_path=str(tmp_path / "saved"),
        task="seq2seq",
        source_field="en",
        target_field="de",
        tokenizer="char",
    )
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=2, seed=0)
    assert pipeline.examples("validation", 5) == [("a dog", "ein Hund")]
    assert pipeline.examples("train", 3) == list(zip(train["en"], train["de"], strict=True))
    (batch,) = list(pipeline.eval_batches("validation"))
    assert pipeline.tokenizer.decode(batch["targets"][0]) == "ein Hund" and batch["weights"][1].sum() == 0
    with pytest.raises(DataError, match="splits \\['train', 'validation'\\], not 'test'"):
        pipeline.examples("test", 1)


# Local files ---------------------------------------------------------------------
def test_tinyshakespeare_char_lm_with_holdout(shared_data: Path):
    path = shared_data / "tinyshakespeare" / "input.txt"
    text = path.read_text(encoding="utf-8")
    config = DataConfig(
        source="text", task="lm", train_path=str(path), holdout_fraction=0.1, tokenizer="char", max_length=128
    )
    pipeline = build_pipeline(config, family="decoder_only", batch_size=16, seed=0)
    train, held_out = lm_text_of_record(pipeline, "train", 0), lm_text_of_record(pipeline, "validation", 0)
    assert train + held_out == text and abs(len(held_out) / len(text) - 0.1) < 0.01 and train.endswith("\n")
    assert pipeline.vocab_size == len(set(train)) + 4


def test_jsonl_and_tsv_records(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) for i in range(5)) + "\n")
    config = DataConfig(
        source="jsonl",
        task="seq2seq",
        train_path=str(tmp_path / "d.jsonl"),
        source_field="q",
        target_field="a",
        tokenizer="char",
    )
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=2, seed=0)
    assert pipeline.examples("train", 2) == [("q0", "a0"), ("q1", "a1")]
    (tmp_path / "d.tsv").write_text("sentence\tlabel\nyes\t1\nno\t0\n")
    config = DataConfig(
        source="tsv",
        task="classification",
        train_path=str(tmp_path / "d.tsv"),
        tsv_header=True,
        text_field="sentence",
        tokenizer="byte",
    )
    pipeline = build_pipeline(config, family="encoder_only", batch_size=2, seed=0)
    assert pipeline.examples("train", 5) == [("yes", "1"), ("no", "0")]


# Synthetic -----------------------------------------------------------------------
@pytest.mark.parametrize("task", ["reverse", "sort", "copy"])
def test_synthetic_seq2seq_answers_and_no_overlap(task: str):
    config = DataConfig(
        synthetic_task=task,
        num_train_examples=3000,
        num_eval_examples=300,
        synthetic_min_length=3,
        synthetic_max_length=8,
    )
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=8, seed=3)
    train, validation, test = (pipeline.examples(s, 10_000) for s in ("train", "validation", "test"))
    assert (len(train), len(validation), len(test)) == (3000, 300, 300)
    expected = {"reverse": lambda s: s[::-1], "sort": lambda s: "".join(sorted(s)), "copy": lambda s: s}[task]
    assert all(t == expected(s) and 3 <= len(s) <= 8 for s, t in train + validation)
    train_inputs = {s for s, _ in train}
    assert not train_inputs & {s for s, _ in validation} and not train_inputs & {s for s, _ in test}
    # Infinite generation: fresh examples each epoch, still disjoint from the held-out sets.
    fresh = set()
    for epoch in range(3):
        fresh |= {s for s, _ in synthetic.generate(task, "train", 2000, 3, 8, seed=3, epoch=epoch)}
    assert len(fresh) > 3000 and not fresh & {s for s, _ in validation + test}


def test_synthetic_majority_labels_and_batches():
    config = DataConfig(task="classification", synthetic_task="majority", num_train_examples=500, max_length=20)
    pipeline = build_pipeline(config, family="encoder_only", batch_size=16, seed=0)
    for text, label in pipeline.examples("validation", 200):
        digits = np.array([int(c) for c in text])
        assert int(label) == int((digits >= 5).sum() > (digits < 5).sum()) and (digits >= 5).sum() * 2 != len(digits)
    batch = next(pipeline.train_batches())
    assert pipeline.num_classes == 2 and batch["tokens"].shape == (16, 20)
    labels = np.array([int(label) for _, label in pipeline.examples("train", 500)])
    assert 0.3 < labels.mean() < 0.7
