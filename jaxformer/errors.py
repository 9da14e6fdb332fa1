"""One taxonomy for errors a user can fix; the ground floor (imports nothing from jaxformer).

Every error caused by what the user passed in (a config value, an input text, a data file, a
checkpoint, a Hub repo id, the machine's backend) is a `UserError`. Its message is one paragraph:
what is wrong, the value, and what to do. The CLI prints a `UserError` as one line `error: ...`
(exit 2); anything else is a bug in jaxformer and keeps its traceback, followed by `REPORT_BUG`.

Each subclass also derives from the built-in it replaces (mostly `ValueError`), so callers that
catch the built-in keep working; code that must tell user errors from bugs checks `UserError`.

    UserError
    ├── ConfigError      a config value or combination (experiment file, overrides, ModelConfig, ...)
    ├── InputError       an argument of a call: prompts, texts, search options, metric inputs
    ├── DataError        a data file, dataset or tokenizer that cannot be used as configured
    ├── CheckpointError  a training checkpoint or Hugging Face checkpoint that cannot be loaded or written
    │   └── CheckpointNotFoundError   (also a FileNotFoundError)
    ├── HubError         a Hub repo id that cannot be resolved
    └── DeviceError      a requested kernel or device the backend does not have
"""

from __future__ import annotations

import errno
import os
import shutil

ISSUE_TRACKER = "the jaxformer issue tracker"  # no public repository URL yet; put it here when there is one
REPORT_BUG = f"this is a bug in jaxformer; please report it at {ISSUE_TRACKER} with the traceback above."


class UserError(Exception):
    """An error the user can fix; its message says how. The CLI prints it as one line (exit 2)."""


class ConfigError(UserError, ValueError):
    """A configuration problem: a key, value or combination that is not allowed."""


class InputError(UserError, ValueError):
    """A bad argument to a public function (prompts, texts, search options, metric inputs)."""


class DataError(UserError, ValueError):
    """Bad data or an unusable data configuration."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: missing, damaged, or from a different model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint (or Hugging Face model) path that does not exist or holds no checkpoint files."""


class HubError(UserError, ValueError):
    """A Hub repo id that cannot be resolved (not cached offline, unknown repo or revision, no network)."""


class DeviceError(UserError, RuntimeError):
    """A requested kernel or device that this machine's JAX backend does not provide."""


# OS errors on a path: what went wrong, then what to do (the path and the flag that named it are filled in).
_OS_ERROR_FIXES: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "check the permissions of it and its directory, or pick another {where}"),
    errno.EPERM: ("operation not permitted", "check the permissions of it and its directory, or pick another {where}"),
    errno.EROFS: ("the disk is mounted read-only", "pick {where_a} on a writable disk"),
    errno.ENOSPC: ("the disk is full", "free some space or pick {where_a} on another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or pick {where_a} on another disk"),
    errno.EEXIST: ("it already exists", "remove it or pick another {where}"),
    errno.ENOTDIR: ("a part of the path is a file, not a directory", "check the path or pick another {where}"),
    errno.EISDIR: ("it is a directory where a file was expected", "give a file path as {where}"),
    errno.ENOENT: ("no such file or directory", "check the path (an output's directory must exist first)"),
}
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def is_path_os_error(err: BaseException) -> bool:
    """An OSError whose errno has a known fix (permission, read-only, full, exists, ...): about a named path,
    or a full / read-only disk (a failed write names no path)."""
    if not isinstance(err, OSError) or err.errno not in _OS_ERROR_FIXES:
        return False
    return err.filename is not None or err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing parent), or None if unknown."""
    candidate = os.path.abspath(os.fspath(path))
    while not os.path.exists(candidate) and os.path.dirname(candidate) != candidate:
        candidate = os.path.dirname(candidate)
    try:
        return shutil.disk_usage(candidate).free
    except OSError:
        return None


def format_bytes(count: int) -> str:
    """'1,234,567 bytes (1.2 MB)': exact, then readable."""
    value, unit = float(count), "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{count:,} bytes" if unit == "bytes" else f"{count:,} bytes ({value:.1f} {unit})"


def os_error_fix(err: OSError, flag: str | None = None, path: str | None = None) -> tuple[str, str]:
    """(what went wrong, what to do) for an OSError, by errno; `flag` (e.g. "--workdir") is the option to change.

    What went wrong starts with the system's own words (`strerror`, e.g. "Read-only file system").
    """
    what, fix = _OS_ERROR_FIXES.get(err.errno or 0, (err.strerror or str(err), "check the path"))
    if err.strerror and err.strerror.lower() != what.lower():
        what = f"{err.strerror}: {what}"
    elif err.strerror:
        what = err.strerror
    fix = fix.format(where=flag or "path", where_a=flag or "a path")
    if err.errno in (errno.ENOSPC, errno.EDQUOT) and path is not None:
        free = free_bytes(path)
        if free is not None:
            what = f"{what} ({format_bytes(free)} free)"
    return what, fix


def describe_os_error(err: OSError, flag: str | None = None) -> str:
    """One line for an OSError on a path: the path, what went wrong and what to do, by errno.

    `flag` names the option that gave the path (e.g. "--workdir"), so the fix can say which one to change.
    """
    if err.filename is None:  # a write to an open file: the disk, not a path
        what, fix = os_error_fix(err, flag)
        return f"a write failed: {what}; {fix}."
    path = os.fsdecode(err.filename)
    what, fix = os_error_fix(err, flag, path)
    if err.filename2 is not None:
        path = f"{path} -> {os.fsdecode(err.filename2)}"
    return f"cannot use {path!r}: {what}; {fix}."


__all__ = [
    "ISSUE_TRACKER",
    "REPORT_BUG",
    "STORAGE_ERRNOS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "HubError",
    "InputError",
    "UserError",
    "describe_os_error",
    "format_bytes",
    "free_bytes",
    "is_path_os_error",
    "os_error_fix",
]
