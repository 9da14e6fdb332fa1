"""Disk refusals during a checkpoint save (no space, read-only, no permission): the error the CLI prints
as one line, how it is recognised in Orbax/tensorstore's errors, and the filter that keeps their logged
tracebacks of that one failure off the console (`Checkpointer` uses it around each save).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxformer.errors import STORAGE_ERRNOS, CheckpointError


class CheckpointStorageError(CheckpointError):
    """A save the disk refused: no space, read-only or no permission. The previous checkpoints are kept."""


# Disk refusals: an OSError's errno, or tensorstore's "[os_error_code='28']" / strerror text in its message.
def storage_errno(err: BaseException | None) -> int | None:
    """The STORAGE_ERRNOS errno behind `err` or any exception it was raised from, else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            return err.errno
        text = str(err)
        for code in STORAGE_ERRNOS:
            if f"os_error_code='{code}'" in text or f"[Errno {code}]" in text or os.strerror(code) in text:
                return code
        err = err.__cause__ or err.__context__
    return None


class StorageNoise(logging.Filter):
    """Holds back what Orbax's background threads print about a save the disk refused.

    Its absl ERROR records (and asyncio's "exception was never retrieved") are dropped when their exception (or message) is a disk refusal;
    the "Event loop is closed" tracebacks of tensorstore writes finishing after Orbax closed its loop reach
    sys.unraisablehook (or sys.excepthook): they are held until the save's fate is known, then printed if it was not a disk refusal.
    """

    def __init__(self) -> None:
        super().__init__()
        self._held: list[Any] = []
        self._lock = threading.Lock()
        self._previous_hook = sys.excepthook
        self._previous_unraisable = sys.unraisablehook
        self.failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return storage_errno(exc) is None and storage_errno(Exception(record.getMessage())) is None

    def _hold(self, value: BaseException | None, show: Callable[[], None]) -> bool:
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            return False
        with self._lock:
            if not self.failed:
                self._held.append(show)
        return True

    def excepthook(self, kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not self._hold(value, lambda: self._previous_hook(kind, value, tb)):
            self._previous_hook(kind, value, tb)

    def unraisablehook(self, unraisable: Any) -> None:
        """tensorstore reports a callback's error with PyErr_WriteUnraisable (printed as a bare traceback)."""
        if not self._hold(unraisable.exc_value, lambda: self._previous_unraisable(unraisable)):
            self._previous_unraisable(unraisable)

    def settle(self, failed: bool) -> None:
        """The save in flight ended: drop the held noise if the disk refused it, else print it."""
        with self._lock:
            held, self._held = self._held, []
            self.failed = failed
        for show in [] if failed else held:
            show()


_NOISE: StorageNoise | None = None


def quiet_storage_noise() -> StorageNoise:
    global _NOISE
    if _NOISE is None:
        _NOISE = StorageNoise()
        for name in ("absl", "asyncio"):  # Orbax's logs; "exception was never retrieved" of its cancelled writes
            logging.getLogger(name).addFilter(_NOISE)
        sys.excepthook = _NOISE.excepthook
        sys.unraisablehook = _NOISE.unraisablehook
    return _NOISE


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
