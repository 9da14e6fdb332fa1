"""Bad data stops with one clear message: what is wrong, where, and what to do."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from jaxformer.data import DataConfig, DataError, DataFileNotFoundError, SequenceTooLongError, build_pipeline


def parallel(tmp_path: Path, source: str | bytes, target: str | bytes, **changes) -> DataConfig:
    for suffix, content in ((".src", source), (".tgt", target)):
        data = content.encode() if isinstance(content, str) else content
        (tmp_path / f"train{suffix}").write_bytes(data)
    values = dict(
        source="parallel",
        task="seq2seq",
        train_path=str(tmp_path / "train"),
        source_suffix=".src",
        target_suffix=".tgt",
        tokenizer="char",
    )
    values.update(changes)
    return DataConfig(**values)


def build(config: DataConfig):
    return build_pipeline(
        config, family=(config.task == "lm" and "decoder_only") or "encoder_decoder", batch_size=2, seed=0
    )


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path):
    config = DataConfig(source="text", task="lm", train_path=str(tmp_path / "nope.txt"), tokenizer="char")
    with pytest.raises(DataFileNotFoundError) as info:
        build(config)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert "nope.txt" in one_line(info.value) and "does not exist" in str(info.value)


def test_mismatched_line_counts(tmp_path: Path):
    with pytest.raises(DataError) as info:
        build(parallel(tmp_path, "a\nb\nc\n", "x\ny\n"))
    assert "has 3 lines" in one_line(info.value) and "has 2" in str(info.value) and "line-aligned" in str(info.value)


def test_empty_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"train\.src' is empty"):
        build(parallel(tmp_path, "", "x\n"))
    (tmp_path / "blank.txt.gz").write_bytes(gzip.compress(b"\n  \n"))
    with pytest.raises(DataError, match="is empty"):
        build(DataConfig(source="text", task="lm", train_path=str(tmp_path / "blank.txt"), tokenizer="char"))


def test_non_utf8_bytes_name_the_line(tmp_path: Path):
    with pytest.raises(DataError) as info:
        build(parallel(tmp_path, "fine\nalso fine\ncaf\xe9 au lait\n".encode("latin-1"), "a\nb\nc\n"))
    message = one_line(info.value)
    assert "not valid UTF-8" in message and "byte 0xe9 at line 3, column 4" in message and "iconv" in message


def test_too_long_sequences_are_truncated_with_a_count(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    config = parallel(tmp_path, "short\n" + "x" * 30 + "\nok\n", "a\nb\n" + "y" * 40 + "\n", max_length=10)
    with caplog.at_level(logging.WARNING, logger="jaxformer.data"):
        pipeline = build(config)
    assert pipeline.stats["train"]["truncated"] == 2
    assert "truncated 2 of 3 train examples" in caplog.text
    examples = pipeline.split_examples("train")
    assert examples.inputs.lengths.max() == 10 and examples.targets.lengths.max() == 10
    assert examples.inputs[1][-1] == examples.targets[2][-1] == 2  # eos kept at the end


def test_too_long_sequences_raise_when_truncation_is_off(tmp_path: Path):
    config = parallel(tmp_path, "short\n" + "x" * 30 + "\n", "a\nb\n", max_length=10, truncate=False)
    with pytest.raises(SequenceTooLongError) as info:
        build(config)
    message = one_line(info.value)
    assert "train.src/train.tgt line 2" in message and "31 tokens" in message and "max_source_length=10" in message
    assert "data.truncate=True" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(source="csv"), "source='csv' is not allowed; choose one of"),
        (dict(task="classification"), "synthetic_task='reverse' is a seq2seq task but task='classification'"),
        (dict(source="text", task="lm", tokenizer="char"), "source='text' needs data.train_path"),
        (dict(source="text", task="lm", train_path="x", tokenizer="digits"), "tokenizer='digits' only encodes"),
        (dict(pack=True, bucket_by_length=True), "exclude each other"),
        (dict(max_length=8), "max_source_length=8 is too short for synthetic_max_length=16"),
        (dict(holdout_fraction=1.5), "holdout_fraction=1.5 must be a number in [0, 1)"),
        (dict(tokenizer="hf"), "tokenizer='hf' needs data.tokenizer_path"),
    ],
)
def test_config_errors_name_field_value_and_choices(changes, expected):
    with pytest.raises(ValueError) as info:
        DataConfig(**changes)
    assert expected in str(info.value)


def test_jsonl_bad_line_is_located(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    config = DataConfig(source="jsonl", task="classification", train_path=str(tmp_path / "d.jsonl"), tokenizer="byte")
    with pytest.raises(DataError, match=r"d\.jsonl' line 2 is not valid JSON"):
        build_pipeline(config, family="encoder_only", batch_size=2, seed=0)
