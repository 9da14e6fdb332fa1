"""Faults a user meets at the command line, each one clear line (exit 2) or a clean stop (exit 0), nothing lost.

Run in process through `jaxformer.cli.main` (the console script's function): an empty or
file-shaped `--workdir`, a directory as `--config`, `num_processes=0`, a coordinator that
never answers (bounded by `--coordinator_timeout`), SIGTERM during start-up, and output flags
(`translate --output`, `evaluate --json`) that name a directory or a place that cannot be written.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support.inference_runs import trained_run
from support.paths import REPO_ROOT

from jaxformer import cli, inference, outputs
from jaxformer.train import loop

SMOKE = str(REPO_ROOT / "experiments" / "smoke.py")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


@pytest.fixture(scope="module")
def reverse(tmp_path_factory: pytest.TempPathFactory) -> inference.Run:
    return inference.load_run(trained_run(tmp_path_factory, "reverse"))


def test_empty_workdir_is_rejected_and_nothing_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--config", SMOKE, "--workdir", "")
    assert code == 2
    one_error_line(err, "--workdir is empty")
    assert list(tmp_path.iterdir()) == []  # no checkpoints in the current directory


def test_workdir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    code, _, err = run_cli(capsys, "train", "--config", SMOKE, "--workdir", str(tmp_path / "notes.txt"))
    assert code == 2
    one_error_line(err, "notes.txt", "is a file")
    code, _, err = run_cli(capsys, "train", "--config", SMOKE, "--workdir", str(tmp_path / "notes.txt" / "run"))
    assert code == 2
    one_error_line(err, "a parent of it is a file")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_directory_as_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "train", "--config", str(REPO_ROOT / "experiments"), "--workdir", str(tmp_path))
    assert code == 2
    one_error_line(err, "is a directory", "experiment file")


def test_zero_processes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = ("--coordinator_address", "127.0.0.1:1", "--num_processes", "0", "--process_id", "0")
    code, _, err = run_cli(capsys, "train", "--config", SMOKE, "--workdir", str(tmp_path), *flags)
    assert code == 2
    one_error_line(err, "num_processes=0 must be >= 1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_coordinator_times_out_with_its_address(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    flags = ("--coordinator_address", address, "--num_processes", "2", "--process_id", "1")
    start = time.monotonic()
    code, _, err = run_cli(
        capsys, "train", "--config", SMOKE, "--workdir", str(tmp_path), *flags, "--coordinator_timeout", "1.5"
    )
    assert code == 2 and time.monotonic() - start < 30
    one_error_line(err, address, "within 1.5 s", "--coordinator_timeout")
    assert not (tmp_path / "checkpoints").exists()


def test_sigterm_during_start_up_is_a_clean_stop(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = loop.build_pipeline

    def build_then_signal(*args, **kwargs):  # SIGTERM arrives while the data is being prepared
        pipeline = real_build(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler runs at the next bytecode
        return pipeline

    monkeypatch.setattr(loop, "build_pipeline", build_then_signal)
    workdir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--config", SMOKE, "--workdir", str(workdir))
    assert code == 0, err
    assert "Stopped on SIGTERM before the first step; nothing to save" in out
    saved = [p for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()] if workdir.exists() else []
    assert saved == []  # no step ran, none was saved
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


@pytest.mark.parametrize("flag", ["--output", "--json"])
def test_output_flag_naming_a_directory_fails_before_decoding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, reverse: inference.Run, flag: str
) -> None:
    command = ("translate", "--text", "123") if flag == "--output" else ("evaluate",)
    code, _, err = run_cli(capsys, *command, "--workdir", str(reverse.workdir), flag, str(tmp_path))
    assert code == 2
    one_error_line(err, flag, "is a directory")
    code, _, err = run_cli(capsys, *command, "--workdir", str(reverse.workdir), flag, str(tmp_path / "no" / "x.txt"))
    assert code == 2
    one_error_line(err, "does not exist")


def test_output_in_a_read_only_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root here (root may write anywhere), so the permission answer is what is replaced.
    (tmp_path / "old.txt").write_text("x")
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    with pytest.raises(outputs.OutputPathError, match="no permission to write in"):
        outputs.check_writable(tmp_path / "out.txt", "--output")
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path) == tmp_path)
    with pytest.raises(outputs.OutputPathError, match=r"old\.txt' is read-only"):
        outputs.check_writable(tmp_path / "old.txt", "--output")


def test_failed_write_prints_the_output_and_keeps_the_old_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", disk_full)
    text = json.dumps({"bleu": 12.5}) + "\n"
    with pytest.raises(outputs.OutputPathError, match=r"No space left on device.*printed above"):
        outputs.write_text(target, text, "--json")
    assert capsys.readouterr().out == text  # the computed result is on the screen
    assert target.read_text() == "old\n"  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no partial file left behind


def test_write_is_atomic_and_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    outputs.write_text(target, "a\nb\n", "--output")
    assert target.read_text() == "a\nb\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
