"""TFDS catalog datasets through `tfds.data_source`: ArrayRecord files read by random access, no TensorFlow.

Why not grain: the pipeline needs only what a random-access source gives directly — a
per-epoch permutation, a per-process share and an exact resume position — and all of it is
a few lines of NumPy (`pipeline.py`, `iterator.py`) over `data_source[i]`; grain would add a
dependency (not installed here) without removing any of our packing/bucketing code.

A dataset that is not prepared in `tfds_data_dir` is not downloaded unless
`data.tfds_download=True`; otherwise loading stops with `DatasetNotPreparedError`, whose message
says how to prepare it elsewhere or to use local files instead.
"""

from __future__ import annotations

import importlib
from typing import Any

from jaxformer.config import suggest
from jaxformer.data import files
from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError, DatasetNotPreparedError
from jaxformer.data.records import RawSplit, fields_for

# TFDS registers these builder packages lazily; importing them makes names like
# "wmt14_translate/de-en" and "glue/sst2" resolvable.
_LAZY_BUILDER_PACKAGES = ("tensorflow_datasets.text", "tensorflow_datasets.translate")


class TfdsRecords:
    """Records of a TFDS data source: `fetch` reads a range by random access and converts it."""

    def __init__(self, source: Any, task: str, fields: tuple[str, ...], where: str) -> None:
        self.source, self.task, self.fields, self.where = source, task, fields, where

    def __len__(self) -> int:
        return len(self.source)

    def fetch(self, start: int, stop: int) -> list[Any]:
        stop = min(stop, len(self.source))
        indices = list(range(start, stop))
        examples = self._read(indices)
        records = []
        for index, example in zip(indices, examples, strict=True):
            where = f"{self.where} example {index}"
            missing = [f for f in self.fields if f not in example]
            if missing:
                raise DataError(
                    f"{where} has no field {missing[0]!r}; its fields are {sorted(example)}. Set data.*_field to one of them."
                )
            records.append(files.record_from_values(self.task, [example[f] for f in self.fields], where))
        return records

    def _read(self, indices: list[int]) -> list[Any]:
        """Batched random access where the source offers it (ArrayRecord reads in parallel), else one by one."""
        if hasattr(self.source, "__getitems__"):
            try:
                return list(self.source.__getitems__(indices))
            except TypeError:  # e.g. the tfds.testing mock, whose __getitems__ is not bound
                pass
        return [self.source[i] for i in indices]


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "source='tfds' needs tensorflow-datasets (pip install 'jaxformer[tfds]'); "
            "TensorFlow itself is not required."
        ) from None
    return tfds


def _builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    not_found = tfds.core.registered.DatasetNotFoundError
    try:
        return tfds.builder(name, data_dir=data_dir)
    except not_found:
        pass
    for package in _LAZY_BUILDER_PACKAGES:
        importlib.import_module(package)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except not_found:
        hint = suggest(name.split("/")[0], tfds.list_builders(with_community_datasets=False))
        raise DataError(
            f"data.tfds_name={name!r} is not a TFDS dataset (or not in this tensorflow-datasets version).{hint} "
            "Check the name in the TFDS catalog, e.g. 'tiny_shakespeare', 'lm1b', 'wmt14_translate/de-en', 'glue/sst2'."
        ) from None


def not_prepared_message(name: str, data_dir: str | None, reason: str) -> str:
    where = data_dir or "~/tensorflow_datasets"
    return (
        f"TFDS dataset {name!r} is not prepared in data_dir={where!r} ({reason}). On a machine with internet run "
        f"`tfds build {name} --data_dir=DIR --file_format=array_record` and copy DIR here, then set "
        f"data.tfds_data_dir=DIR; datasets that need manual downloads read them from DIR/downloads/manual. "
        "Or set data.tfds_download=True where downloading is possible, or train on local files instead "
        "(data.source='parallel', 'text', 'tsv' or 'jsonl' with data.train_path)."
    )


def load_tfds_split(config: DataConfig, split: str) -> RawSplit:
    """The records of `split` of the configured TFDS dataset (converted lazily)."""
    tfds = _import_tfds()
    name = str(config.tfds_name)
    split_name = {"train": config.train_split, "validation": config.eval_split, "test": config.test_split}[split]
    builder = _builder(tfds, name, config.tfds_data_dir)
    try:
        source = tfds.data_source(name, split=split_name, data_dir=config.tfds_data_dir, download=config.tfds_download)
    except DataError:
        raise
    except Exception as err:  # tfds raises many types (AssertionError, NotImplementedError, download errors)
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if not builder.is_prepared():
            if not config.tfds_download:
                reason = "no prepared files there, and data.tfds_download=False"
            raise DatasetNotPreparedError(not_prepared_message(name, config.tfds_data_dir, reason)) from None
        splits = sorted(builder.info.splits.keys())
        if split_name not in splits:
            raise DataError(
                f"TFDS dataset {name!r} has no split {split_name!r}; it has {splits}. "
                "Set data.train_split / data.eval_split / data.test_split."
            ) from None
        raise DataError(
            f"TFDS dataset {name!r} could not be opened for random access ({reason}); prepare it with "
            "--file_format=array_record (TFRecord files cannot be read without TensorFlow)."
        ) from None
    return RawSplit(
        split,
        TfdsRecords(source, config.task, fields_for(config), f"{name}[{split_name}]"),
        lambda i: f"{name}[{split_name}] example {i}",
    )
