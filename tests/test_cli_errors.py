"""The CLI tells user errors from bugs by `jaxformer.errors.UserError`, never by the built-in type.

A user error (bad override, missing file, a kernel this backend lacks, a bad command line, ...) is ONE
line `error: ...` on stderr and exit status 2, no traceback. Anything else is a bug: the full traceback,
then `REPORT_BUG`, exit status 1; an internal `ValueError` is NOT shown as a user error.

The user-error cases run through `jaxformer.cli.main` in one fresh interpreter (each jax import costs
seconds), the injected bug and one user error through the real command line in their own processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.fake_devices import FAST_CPU_FLAGS
from support.paths import REPO_ROOT

from jaxformer import cli
from jaxformer.errors import REPORT_BUG, ConfigError, UserError

SMOKE = str(REPO_ROOT / "experiments" / "smoke.py")  # 1+1-layer tiny-transformer, synthetic digits, batch 8
TRAIN = ["train", "--config", SMOKE, "--workdir", "{tmp}/w"]

# (id, argv, fragments the one error line must contain); {tmp} is a fresh directory
USER_ERROR_CASES = [
    ("unknown override key", [*TRAIN, "--config.train.stepz=3"], ["'train.stepz'", "Did you mean 'train.steps'?"]),
    ("override of the wrong type", [*TRAIN, "--config.train.steps=abc"], ["'train.steps'", "int", "'abc'"]),
    (
        "missing experiment file",
        ["train", "--config", "{tmp}/nope.py", "--workdir", "{tmp}/w"],
        ["nope.py", "not found"],
    ),
    (
        "cudnn attention on a CPU",
        [*TRAIN, "--config.model.attention_impl=cudnn"],
        ["attention_impl='cudnn'", "cpu backend", "['reference', 'xla']"],
    ),
    (
        "generate from a missing workdir",
        ["generate", "--workdir", "{tmp}/none", "--prompt", "ROMEO:"],
        ["{tmp}/none", "does not exist", "--workdir"],
    ),
    (
        "generate from a directory that is no run",
        ["generate", "--workdir", "{tmp}", "--prompt", "ROMEO:"],
        ["no config.json", "training workdir"],
    ),
    (
        "a search method the command lacks",
        ["translate", "--workdir", "{tmp}", "--text", "12345", "--method", "sample"],
        ["--method", "invalid choice: 'sample'", "jaxformer translate --help"],
    ),
    (
        "overrides outside train",
        ["export", "--workdir", "{tmp}", "--out", "{tmp}/out", "--config.train.steps=3"],
        ["--config.* overrides are only accepted by 'train'"],
    ),
    (
        "translate input file missing",
        ["translate", "--workdir", "{tmp}", "--input", "{tmp}/missing.txt"],
        ["missing.txt", "No such file"],
    ),
    (
        "export of a path with no checkpoint",
        ["export", "--workdir", "{tmp}/none", "--out", "{tmp}/out"],
        ["checkpoint path", "does not exist"],
    ),
]

DRIVER = """
import contextlib, io, json, sys
from jaxformer import cli
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as stop:  # argparse's exit for a bad command line
            code = stop.code
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""

INJECTED_BUG = """
import sys
from jaxformer import cli
from jaxformer.train import step

def broken_loss(*args, **kwargs):
    raise ValueError("injected internal bug in the loss")

step.cross_entropy = broken_loss  # what the train step calls while it is traced
sys.exit(cli.main(sys.argv[1:]))
"""


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAXFORMER_DEBUG"}
    path = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_CPU_FLAGS, "PYTHONPATH": path}


def fill(items: list[str], tmp: Path) -> list[str]:
    return [item.replace("{tmp}", str(tmp)) for item in items]


def assert_one_error_line(code: int, stdout: str, stderr: str, fragments: list[str]) -> None:
    assert "Traceback" not in stdout + stderr, stderr
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert REPORT_BUG not in stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from {lines[0]!r}"


@pytest.fixture(scope="module")
def user_error_results(tmp_path_factory) -> tuple[Path, dict[str, list]]:
    tmp = tmp_path_factory.mktemp("user_errors")
    argvs = [fill(argv, tmp) for _, argv, _ in USER_ERROR_CASES]
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    return tmp, {case[0]: result for case, result in zip(USER_ERROR_CASES, results, strict=True)}


@pytest.mark.parametrize(
    ("name", "fragments"), [(c[0], c[2]) for c in USER_ERROR_CASES], ids=[c[0] for c in USER_ERROR_CASES]
)
def test_user_error_is_one_line_and_exit_2(user_error_results, name, fragments):
    tmp, results = user_error_results
    code, stdout, stderr = results[name]
    assert_one_error_line(code, stdout, stderr, fill(fragments, tmp))
    assert not (tmp / "w" / "metrics.jsonl").exists()  # nothing trained


def test_console_script_user_error_is_one_line(tmp_path):
    """The real command line: cuDNN attention on a CPU fails at validation, not inside jit."""
    script = Path(sys.executable).with_name("jaxformer")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "jaxformer.cli"]
    proc = subprocess.run(
        [*command, *fill(TRAIN, tmp_path), "--config.model.attention_impl=cudnn"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, ["attention_impl='cudnn'", "'xla'"])
    assert proc.stdout == ""


def test_internal_value_error_in_a_train_step_prints_traceback_and_bug_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", INJECTED_BUG, *fill(TRAIN, tmp_path), "--config.train.steps=2"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert "Traceback (most recent call last):" in lines
    assert "ValueError: injected internal bug in the loss" in lines
    assert any("jaxformer/train/step.py" in line for line in lines), proc.stderr[-3000:]  # raised inside the step
    assert lines[-1] == REPORT_BUG
    assert not any(line.startswith("error: ") for line in lines)


def test_report_bug_line_says_it_is_a_bug_and_where_to_report():
    assert REPORT_BUG.startswith("this is a bug in jaxformer; please report it at ")
    assert REPORT_BUG.endswith(" with the traceback above.")


def broken_export(*args, **kwargs):
    raise KeyError("params")  # a bug inside the command (a lookup that should not fail), not the user's input


def test_internal_error_in_process_is_exit_1_with_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("JAXFORMER_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_export", broken_export)
    code = cli.main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last):" in err
    assert "KeyError: 'params'" in err
    assert err.splitlines()[-1] == REPORT_BUG


def user_mistake(*args, **kwargs):
    raise ConfigError("checkpoint.keep=0 must be a positive integer.")


@pytest.mark.parametrize("failure", [broken_export, user_mistake], ids=["bug", "user error"])
def test_debug_env_lets_every_error_propagate(tmp_path, monkeypatch, capsys, failure):
    monkeypatch.setenv("JAXFORMER_DEBUG", "1")
    monkeypatch.setattr(cli, "cmd_export", failure)
    expected = UserError if failure is user_mistake else KeyError
    with pytest.raises(expected):
        cli.main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError(2, "No such file or directory", "x.txt"), PermissionError(13, "Permission denied", "/root/w")],
    ids=["missing file", "no permission"],
)
def test_os_errors_on_user_paths_are_user_errors(error):
    assert cli.is_user_error(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        KeyError("k"),
        TypeError("t"),
        RuntimeError("r"),
        FileNotFoundError("a message but no path"),
        FileNotFoundError(2, "No such file or directory", str(cli.PACKAGE_DIR / "missing_module_file.json")),
    ],
    ids=["ValueError", "KeyError", "TypeError", "RuntimeError", "OSError without a path", "OSError in the package"],
)
def test_builtin_errors_are_not_user_errors(error):
    assert not cli.is_user_error(error)
