"""Hugging Face `datasets` from local storage: a `save_to_disk` directory or parquet/JSON/CSV files.

`data.hf_path` = a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`
(splits picked by `data.train_split` / `eval_split` / `test_split`; a single Dataset is the
training split) or one data file for training. `data.train_path` / `eval_path` / `test_path`
name data files per split. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxformer.data import files
from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError, DataFileNotFoundError
from jaxformer.data.records import RawSplit, fields_for

_FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv"}


class HFRecords:
    """Records of a `datasets.Dataset`, read by slices of columns."""

    def __init__(self, dataset: Any, task: str, fields: tuple[str, ...], where: str) -> None:
        missing = [f for f in fields if f not in dataset.column_names]
        if missing:
            raise DataError(
                f"{where} has no column {missing[0]!r}; its columns are {dataset.column_names}. Set data.*_field to one of them."
            )
        self.dataset = dataset.select_columns(list(fields))
        self.task, self.fields, self.where = task, fields, where

    def __len__(self) -> int:
        return len(self.dataset)

    def fetch(self, start: int, stop: int) -> list[Any]:
        stop = min(stop, len(self.dataset))
        columns = self.dataset[start:stop]
        values = list(zip(*(columns[f] for f in self.fields), strict=True))
        return [
            files.record_from_values(self.task, row, f"{self.where} row {start + i}") for i, row in enumerate(values)
        ]


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("source='hf' needs the `datasets` package (pip install 'jaxformer[hf]').") from None
    return datasets


def _load_file(datasets: Any, path: str) -> Any:
    file = Path(path).expanduser()
    if not file.exists():
        raise DataFileNotFoundError(
            f"Hugging Face data file {str(file)!r} does not exist; check data.hf_path / data.*_path."
        )
    builder = _FORMATS.get(file.suffix.lower())
    if builder is None:
        raise DataError(f"cannot tell the format of {str(file)!r}; use a .parquet, .json, .jsonl or .csv file.")
    kwargs = {"delimiter": "\t"} if file.suffix.lower() == ".tsv" else {}
    return datasets.load_dataset(builder, data_files={"data": str(file)}, split="data", **kwargs)


def _load_disk(datasets: Any, path: Path, split_name: str, is_train: bool) -> Any | None:
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(f"{str(path)!r} is not a directory written by save_to_disk ({err}).") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split_name not in loaded:
            raise DataError(
                f"dataset at {str(path)!r} has splits {sorted(loaded)}, not {split_name!r}; "
                "set data.train_split / data.eval_split / data.test_split."
            )
        return loaded[split_name]
    return loaded if is_train else None


def load_hf_split(config: DataConfig, split: str) -> RawSplit | None:
    """Records of `split`; None when nothing provides it."""
    datasets = _import_datasets()
    split_name = {"train": config.train_split, "validation": config.eval_split, "test": config.test_split}[split]
    path = {"train": config.train_path, "validation": config.eval_path, "test": config.test_path}[split]
    dataset = None
    where = ""
    if path is not None:
        dataset, where = _load_file(datasets, path), path
    elif config.hf_path is not None:
        hf_path = Path(config.hf_path).expanduser()
        if not hf_path.exists():
            raise DataFileNotFoundError(f"data.hf_path={config.hf_path!r} does not exist.")
        if hf_path.is_dir():
            dataset, where = (
                _load_disk(datasets, hf_path, split_name, split == "train"),
                f"{config.hf_path}[{split_name}]",
            )
        elif split == "train":
            dataset, where = _load_file(datasets, config.hf_path), config.hf_path
    if dataset is None:
        return None
    records = HFRecords(dataset, config.task, fields_for(config), where)
    return RawSplit(split, records, lambda i: f"{where} row {i}")
