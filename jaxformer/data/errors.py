"""Errors of the data package. Each message is one paragraph: what is wrong, the value, what to do.

`DataError` is `jaxformer.errors.DataError` (a `UserError`, so the CLI prints the message as one
line); it and its subclasses are also ValueErrors (and FileNotFoundErrors where a file is missing),
so callers that catch the built-in types keep working.
"""

from __future__ import annotations

from jaxformer.errors import DataError

__all__ = ["DataError", "DataFileNotFoundError", "DatasetNotPreparedError", "SequenceTooLongError"]


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A configured data file or directory does not exist."""


class DatasetNotPreparedError(DataError):
    """A TFDS dataset is neither prepared in the data dir nor downloadable."""


class SequenceTooLongError(DataError):
    """An example is longer than the configured limit and `data.truncate` is False."""
