"""Records of a split: a random-access `Records` sequence and the `RawSplit` around it.

The types every source produces (local files, TFDS, Hugging Face), in a module below all of
them, so `sources.load_split` can dispatch to each without an import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from jaxformer.data.config import DataConfig


class Records(Protocol):
    def __len__(self) -> int: ...

    def fetch(self, start: int, stop: int) -> list[Any]: ...


class ListRecords:
    """Records held in memory."""

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def fetch(self, start: int, stop: int) -> list[Any]:
        return list(self.records[start:stop])


class LimitedRecords:
    """The first `limit` records of another `Records`."""

    def __init__(self, inner: Records, limit: int) -> None:
        self.inner, self.limit = inner, min(limit, len(inner))

    def __len__(self) -> int:
        return self.limit

    def fetch(self, start: int, stop: int) -> list[Any]:
        return self.inner.fetch(start, min(stop, self.limit))


@dataclasses.dataclass
class RawSplit:
    name: str
    records: Records
    where: Callable[[int], str]

    def __len__(self) -> int:
        return len(self.records)

    def chunks(self, size: int = 8192) -> Iterator[tuple[int, list[Any]]]:
        """(start index, records) pieces covering the split in order."""
        for start in range(0, len(self.records), size):
            yield start, self.records.fetch(start, start + size)

    def head(self, n: int) -> list[Any]:
        return self.records.fetch(0, n)


def fields_for(config: DataConfig) -> tuple[str, ...]:
    """The record fields a structured source must provide for the task."""
    if config.task == "lm":
        return (config.text_field,)
    if config.task == "seq2seq":
        return (config.source_field, config.target_field)
    return (config.text_field, config.label_field)
