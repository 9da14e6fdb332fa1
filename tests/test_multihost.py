"""Multi-host: two local processes joined by `jax.distributed` train like one process.

Two processes with 4 fake CPU devices each connect through a coordinator on 127.0.0.1 and
build one 8-device mesh (data=8); each feeds its own rows of every global batch.
- `jaxformer train` itself (a tiny synthetic experiment): the two-process run must log the
  losses and eval loss of the same command run as one process with 8 devices.
- (slow) the runtimes driven directly on fixed batches: jit and pmap losses match one process,
  a checkpoint saved by both processes together restores exactly.
Plus: how `maybe_initialize` picks its settings (flags, environment, SLURM) and that
`jaxformer train` passes its flags on before anything else.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from support.fake_devices import free_port, launch, result_of, run_worker
from support.tiny_experiment import write_tiny_experiment

from jaxformer import cli, distributed
from jaxformer.errors import ConfigError


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}:\n{err[-4000:]}"
    return out


def records(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_cli_two_processes_train_like_one_process_with_eight_devices(tmp_path: Path) -> None:
    config = write_tiny_experiment(tmp_path)
    port = free_port()
    train = ["-m", "jaxformer.cli", "train", "--config", str(config), "--config.mesh.data=8", "--workdir"]
    joined = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id"]
    processes = [launch([*train, str(tmp_path / "two"), *joined, str(i)], devices=4) for i in range(2)]
    processes.append(launch([*train, str(tmp_path / "one")], devices=8))
    try:
        first, second, single = (finish(p) for p in processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert "Finished" in first and "Finished" in single and "Finished" not in second  # only process 0 prints
    two, one = records(tmp_path / "two"), records(tmp_path / "one")
    losses_two = [r["loss"] for r in two if "loss" in r]
    losses_one = [r["loss"] for r in one if "loss" in r]
    print(f"jaxformer train losses: two processes x 4 devices {losses_two}, one process x 8 devices {losses_one}")
    assert len(losses_two) == len(losses_one) == 3
    assert max(abs(a - b) for a, b in zip(losses_two, losses_one, strict=True)) <= 1e-5
    assert abs(two[-1]["eval_loss"] - one[-1]["eval_loss"]) <= 1e-5
    assert (tmp_path / "two" / "checkpoints" / "3").is_dir()  # written by both processes together


@pytest.mark.slow  # additional to the CLI test above: pmap across processes, checkpoint restore, eval padding
def test_runtime_two_processes_jit_pmap_and_checkpoint() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        workers = [run_worker(["multihost", str(port), "2", str(i), workdir], devices=4) for i in range(2)]
        single = run_worker(["baseline"], devices=8)
        try:
            reference = result_of(single)
            first = result_of(workers[0])
            workers[1].communicate(timeout=300)
            assert workers[1].returncode == 0
        finally:
            for process in [*workers, single]:
                if process.poll() is None:
                    process.kill()
    assert (first["how"], first["process_count"], first["device_count"], first["local_device_count"]) == (
        "explicit",
        2,
        8,
        4,
    )
    for name in ("data=8", "pmap"):
        got, want = first["losses"][name], reference["losses"][name]
        print(f"{name}: two processes {got}, one process {want}")
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1e-5, (name, got, want)
    # 13 evaluation rows split 7 + 6 over the processes (each padded with weight-0 rows).
    assert abs(first["eval"]["data=8"] - reference["eval"]["data=8"]) <= 1e-5
    assert first["restore_max_diff"] == 0.0 and first["restored_data_state"] == {"position": 3}


# How maybe_initialize decides -------------------------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = []

    def initialize(
        coordinator_address: Any = None, num_processes: Any = None, process_id: Any = None, **_: Any
    ) -> None:
        recorded.append({"address": coordinator_address, "count": num_processes, "index": process_id})

    monkeypatch.setattr(distributed.jax.distributed, "initialize", initialize)
    monkeypatch.setattr(distributed, "wait_for_coordinator", lambda address, timeout_s: None)  # no network here
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
    return recorded


def test_explicit_arguments_win_over_environment(calls: list[dict[str, Any]]) -> None:
    env = {"JAXFORMER_COORDINATOR": "other:1", "JAXFORMER_NUM_PROCESSES": "9", "JAXFORMER_PROCESS_ID": "8"}
    assert distributed.maybe_initialize("10.0.0.1:1234", 4, 2, environ=env) == "explicit"
    assert calls == [{"address": "10.0.0.1:1234", "count": 4, "index": 2}]


def test_environment_fallback(calls: list[dict[str, Any]]) -> None:
    env = {"JAXFORMER_COORDINATOR": "host0:8476", "JAXFORMER_NUM_PROCESSES": "2", "JAXFORMER_PROCESS_ID": "1"}
    assert distributed.maybe_initialize(environ=env) == "explicit"
    assert calls == [{"address": "host0:8476", "count": 2, "index": 1}]


def test_single_process_does_nothing(calls: list[dict[str, Any]]) -> None:
    assert distributed.maybe_initialize(environ={"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == "single"
    assert calls == []


def test_slurm_step_with_several_tasks_autodetects(calls: list[dict[str, Any]]) -> None:
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "8", "SLURM_JOB_ID": "77"}
    assert distributed.maybe_initialize(environ=env) == "slurm"
    assert calls == [{"address": None, "count": None, "index": None}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coordinator_address": "h:1", "num_processes": 2}, r"needs --num_processes and --process_id"),
        (
            {"coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
            r"process_id=2 must be in \[0, num_processes=2\)",
        ),
        ({"coordinator_address": "h", "num_processes": 2, "process_id": 0}, r"must look like HOST:PORT"),
        ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, r"num_processes=0 must be >= 1"),
        ({"num_processes": 2, "process_id": 0}, r"without a coordinator address"),
    ],
)
def test_incomplete_settings_are_rejected(calls: list[dict[str, Any]], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        distributed.maybe_initialize(**kwargs, environ={})
    assert calls == []


def test_bad_integer_in_environment(calls: list[dict[str, Any]]) -> None:
    env = {"JAXFORMER_COORDINATOR": "h:1", "JAXFORMER_NUM_PROCESSES": "two", "JAXFORMER_PROCESS_ID": "0"}
    with pytest.raises(ValueError, match=r"num_processes='two' must be an integer"):
        distributed.maybe_initialize(environ=env)


def test_cli_train_initializes_first_with_its_flags(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    seen: list[tuple[Any, ...]] = []

    def fake(address: Any, count: Any, index: Any, **_: Any) -> str:
        seen.append((address, count, index))
        raise ConfigError("stopped after initialize")  # a user error: printed as one line, exit 2

    monkeypatch.setattr(distributed, "maybe_initialize", fake)
    argv = ["train", "--config", "missing.py", "--workdir", "w", "--coordinator_address", "h0:99"]
    status = cli.main([*argv, "--num_processes", "2", "--process_id", "1"])
    assert status == 2 and seen == [("h0:99", 2, 1)]
    assert "stopped after initialize" in capsys.readouterr().err
