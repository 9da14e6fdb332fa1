"""Raw records of one split, from any configured source.

A `RawSplit` is a random-access sequence of records (lm: str; seq2seq: (source, target);
classification: (text, label)) plus `where(i)`, a description of record i for error messages
("train.en.gz line 12"); the types live in `records.py`. TFDS and Hugging Face splits are read
lazily in chunks.
"""

from __future__ import annotations

import logging

from jaxformer.data import files, synthetic
from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError, DataFileNotFoundError
from jaxformer.data.hf_source import load_hf_split
from jaxformer.data.instruct import read_instruct_jsonl
from jaxformer.data.labelled_blocks import build_labelled_blocks
from jaxformer.data.records import LimitedRecords, ListRecords, RawSplit, fields_for
from jaxformer.data.tfds_source import load_tfds_split

SPLITS = ("train", "validation", "test")
log = logging.getLogger("jaxformer.data")


def load_split(config: DataConfig, split: str, seed: int) -> RawSplit | None:
    """Records of `split` ("train", "validation" or "test"); None when the config provides none."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is unknown; choose one of {list(SPLITS)}.")
    if config.source == "synthetic":
        count = config.num_train_examples if split == "train" else config.num_eval_examples
        records = synthetic.generate(
            config.synthetic_task, split, count, config.synthetic_min_length, config.synthetic_max_length, seed
        )
        return RawSplit(split, ListRecords(records), lambda i: f"synthetic {split} example {i}")
    raw = _load_source(config, split)
    if config.holdout_fraction > 0 and split != "test" and _holds_out(config):
        raw = _held_out(config, raw if split == "train" else _load_source(config, "train"), split)
    limit = config.max_train_examples if split == "train" else config.max_eval_examples
    if raw is not None and limit:
        raw = RawSplit(raw.name, LimitedRecords(raw.records, limit), raw.where)
    return raw


def _holds_out(config: DataConfig) -> bool:
    """Whether validation is carved out of the training records (local files without an eval_path)."""
    from_files = config.source in ("text", "parallel", "tsv", "jsonl", "instruct") or (
        config.source == "hf" and not config.hf_path
    )
    return from_files and config.eval_path is None


def _load_source(config: DataConfig, split: str) -> RawSplit | None:
    if config.source == "tfds":
        return load_tfds_split(config, split)
    if config.source == "hf":
        return load_hf_split(config, split)
    return _load_local(config, split)


def _held_out(config: DataConfig, train: RawSplit | None, part: str) -> RawSplit:
    """Split the training records: the last `holdout_fraction` is validation. A single-document text
    file is cut at the line break nearest the split point instead."""
    if train is None:
        raise DataError("holdout_fraction needs a training split; set data.train_path.")
    records = train.records
    if config.source == "text" and config.text_unit == "file":
        text = records.fetch(0, 1)[0]
        cut = text.find("\n", int(len(text) * (1.0 - config.holdout_fraction)))
        cut = len(text) if cut < 0 else cut + 1
        piece = text[:cut] if part == "train" else text[cut:]
        if not piece.strip():
            raise DataError(f"holdout_fraction={config.holdout_fraction} leaves the {part} split empty; change it.")
        return RawSplit(part, ListRecords([piece]), train.where)
    n_train = len(records) - max(1, round(len(records) * config.holdout_fraction))
    if n_train < 1:
        raise DataError(f"holdout_fraction={config.holdout_fraction} leaves no training records of {len(records)}.")
    if part == "train":
        return RawSplit(part, LimitedRecords(records, n_train), train.where)
    tail = records.fetch(n_train, len(records))
    return RawSplit(part, ListRecords(tail), lambda i: train.where(n_train + i))


def _split_path(config: DataConfig, split: str) -> str | None:
    return {"train": config.train_path, "validation": config.eval_path, "test": config.test_path}[split]


def _load_local(config: DataConfig, split: str) -> RawSplit | None:
    """`_read_local`; a missing file's error also says how to make it when the experiment tells
    (`data.missing_files_hint`)."""
    try:
        return _read_local(config, split)
    except DataFileNotFoundError as err:
        if not config.missing_files_hint:
            raise
        raise DataFileNotFoundError(f"{err} Make it with: {config.missing_files_hint}") from None


def _read_local(config: DataConfig, split: str) -> RawSplit | None:
    if config.source == "labelled_blocks":
        return _labelled_blocks(config, split)
    path = _split_path(config, split)
    if path is None:
        return None
    if config.source == "text":
        if config.text_unit == "file":
            text = files.read_text(path, f"{split} text")
            return RawSplit(split, ListRecords([text]), lambda i: f"{path}")
        numbered = [
            (n, line) for n, line in enumerate(files.read_lines(path, f"{split} text"), start=1) if line.strip()
        ]
        if not numbered:
            raise DataError(f"{split} text file {path!r} has only blank lines.")
        return RawSplit(split, ListRecords([line for _, line in numbered]), lambda i: f"{path} line {numbered[i][0]}")
    if config.source == "parallel":
        pairs, src, tgt = files.read_parallel(path, config.source_suffix, config.target_suffix)
        return RawSplit(split, ListRecords(pairs), lambda i: f"{src.name}/{tgt.name} line {i + 1}")
    if config.source == "tsv":
        records = files.read_tsv(path, config.task, config.tsv_header, fields_for(config))
        offset = 2 if config.tsv_header else 1
        return RawSplit(split, ListRecords(records), lambda i: f"{path} line {i + offset}")
    if config.source == "jsonl":
        records = files.read_jsonl(path, config.task, fields_for(config))
        return RawSplit(split, ListRecords(records), lambda i: f"{path} record {i + 1}")
    if config.source == "instruct":
        segments = read_instruct_jsonl(path, config)
        return RawSplit(split, ListRecords(segments), lambda i: f"{path} record {i + 1}")
    raise DataError(f"source={config.source!r} has no local files.")


def _labelled_blocks(config: DataConfig, split: str) -> RawSplit | None:
    """The train or validation blocks of `train_path` (no test split)."""
    if split == "test":
        return None
    path = str(config.train_path)
    blocks = build_labelled_blocks(
        files.read_text(path, "labelled text"),
        config.header_pattern,
        config.top_labels,
        config.num_blocks,
        config.eval_block_every,
    )
    records = blocks.train if split == "train" else blocks.validation
    log.info("%s: %d %s records, labels %s", path, len(records), split, list(blocks.labels))
    return RawSplit(split, ListRecords(records), lambda i: f"{path} {split} record {i + 1}")
