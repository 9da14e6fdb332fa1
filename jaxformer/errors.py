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


__all__ = [
    "ISSUE_TRACKER",
    "REPORT_BUG",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "HubError",
    "InputError",
    "UserError",
]
