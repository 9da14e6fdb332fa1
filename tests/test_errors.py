"""One error taxonomy: every user-facing error class is a `jaxformer.errors.UserError` (and still the built-in
it used to be, so existing `except ValueError` callers keep working); internal invariants are not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jaxformer import config, demo, errors, inference
from jaxformer.data import errors as data_errors
from jaxformer.data import tokenizer_store
from jaxformer.hf import hub
from jaxformer.train import checkpoint, loop

PACKAGE = Path(errors.__file__).resolve().parent

USER_FACING = [  # (class, the built-in it must still be)
    (config.ConfigError, ValueError),
    (data_errors.DataError, ValueError),
    (data_errors.DataFileNotFoundError, FileNotFoundError),
    (data_errors.DatasetNotPreparedError, ValueError),
    (data_errors.SequenceTooLongError, ValueError),
    (tokenizer_store.TokenizerChangedError, ValueError),
    (checkpoint.CheckpointError, ValueError),
    (checkpoint.CheckpointCorruptError, ValueError),
    (checkpoint.CheckpointMismatchError, ValueError),
    (errors.CheckpointNotFoundError, FileNotFoundError),
    (hub.HubError, ValueError),
    (inference.InferenceError, ValueError),
    (inference.NoCheckpointError, ValueError),
    (inference.WrongFamilyError, ValueError),
    (inference.EmptyInputError, ValueError),
    (inference.InputTooLongError, ValueError),
    (demo.DemoDependencyError, ValueError),
    (loop.TrainingError, RuntimeError),
    (errors.DeviceError, RuntimeError),
]


@pytest.mark.parametrize(("cls", "builtin"), USER_FACING, ids=[c.__name__ for c, _ in USER_FACING])
def test_user_facing_errors_are_user_errors_and_their_builtin(cls, builtin):
    assert issubclass(cls, errors.UserError)
    assert issubclass(cls, builtin)


def test_one_class_per_kind():
    """The packages re-export the taxonomy's classes rather than defining look-alikes."""
    assert config.ConfigError is errors.ConfigError
    assert data_errors.DataError is errors.DataError
    assert checkpoint.CheckpointError is errors.CheckpointError
    assert hub.HubError is errors.HubError
    assert issubclass(inference.InferenceError, errors.InputError)


def test_errors_module_is_the_ground_floor():
    tree = ast.parse((PACKAGE / "errors.py").read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[0] == "jaxformer"], imported


def test_user_errors_are_not_plain_exceptions_of_the_bug_kind():
    assert not issubclass(errors.UserError, (ValueError, KeyError, RuntimeError))
