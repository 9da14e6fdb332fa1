"""Errors of the data package. Each message is one paragraph: what is wrong, the value, what to do.

They subclass ValueError (and FileNotFoundError where a file is missing), so callers that
catch the built-in types keep working and the CLI can print the message as one line.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data or an unusable data configuration."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A configured data file or directory does not exist."""


class DatasetNotPreparedError(DataError):
    """A TFDS dataset is neither prepared in the data dir nor downloadable."""


class SequenceTooLongError(DataError):
    """An example is longer than the configured limit and `data.truncate` is False."""
