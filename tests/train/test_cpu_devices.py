"""`mesh.cpu_devices`: `jaxformer train` splits the host CPU into N XLA devices and trains data-parallel.

- In a fresh process, `--config.mesh.cpu_devices=2` gives 2 CPU devices (over XLA_FLAGS' count of 1)
  and a data=2 mesh; (slow) the run logs the losses of the same command on JAX's single device.
- In a process where JAX has already started, the setting cannot apply: one warning line, and the
  devices stay as they are (the slow `benchmarks.baby_train` smoke test trains that way in process).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import pytest
from support.fake_devices import launch, result_of
from support.tiny_experiment import write_tiny_experiment

from jaxformer import distributed

# Runs `jaxformer train` in this process, then reports what JAX ended up with.
DRIVER = """
import json, sys
import jax
from jaxformer import cli
code = cli.main(["train", *sys.argv[1:]])
print("RESULT " + json.dumps({"code": code, "devices": jax.device_count(), "cpu": jax.local_device_count("cpu")}))
"""


def losses(workdir: Path) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def train_in_subprocesses(tmp_path: Path, runs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """`jaxformer train` of the tiny experiment once per run (name -> extra flags), each in its own process
    with XLA_FLAGS' device count 1, all at once; their RESULT lines."""
    config = write_tiny_experiment(tmp_path)
    processes = {
        name: launch(["-c", DRIVER, "--config", str(config), "--workdir", str(tmp_path / name), *flags], devices=1)
        for name, flags in runs.items()
    }
    try:
        return {name: result_of(process, keep_stderr=True) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()


def test_cpu_devices_splits_the_host_before_jax_starts(tmp_path: Path) -> None:
    got = train_in_subprocesses(tmp_path, {"split": ["--config.mesh.cpu_devices=2"]})["split"]
    assert (got["code"], got["devices"], got["cpu"]) == (0, 2, 2)  # mesh.cpu_devices won over XLA_FLAGS' 1
    assert "not applied" not in got["stderr"]
    assert len(losses(tmp_path / "split")) == 3
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["mesh"]["cpu_devices"] == 2  # the run's config records it


@pytest.mark.slow  # the data-parallel step itself is checked against one device in tests/test_sharding.py
def test_cpu_devices_run_logs_the_losses_of_one_device(tmp_path: Path) -> None:
    got = train_in_subprocesses(tmp_path, {"split": ["--config.mesh.cpu_devices=2"], "single": []})
    assert (got["split"]["devices"], got["single"]["devices"]) == (2, 1)
    split_losses, single_losses = losses(tmp_path / "split"), losses(tmp_path / "single")
    print(f"losses: 2 CPU devices (data=2) {split_losses}, 1 device {single_losses}")
    assert len(split_losses) == len(single_losses) == 3
    assert max(abs(a - b) for a, b in zip(split_losses, single_losses, strict=True)) <= 1e-5


def test_cpu_devices_after_jax_started_warns_once_and_keeps_the_devices_there_are(capsys) -> None:
    have = jax.local_device_count("cpu")  # this test process started JAX long ago
    # `jaxformer train` applies the setting, then train_and_evaluate does again: one warning.
    assert [distributed.set_cpu_device_count(have + 1) for _ in range(2)] == [have, have]
    assert jax.local_device_count("cpu") == have
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1, warnings
    assert f"mesh.cpu_devices={have + 1} not applied" in warnings[0] and f"with {have} CPU device" in warnings[0]
    assert f"--xla_force_host_platform_device_count={have + 1}" in warnings[0]


def test_cpu_devices_zero_leaves_jax_alone(monkeypatch, capsys) -> None:
    have = jax.local_device_count("cpu")
    assert distributed.set_cpu_device_count(have) == have  # already so: nothing to say

    def asked(*_: Any) -> int:
        raise AssertionError("mesh.cpu_devices=0 must not start or query a JAX backend")

    monkeypatch.setattr(distributed.jax, "local_device_count", asked)
    assert distributed.set_cpu_device_count(0) is None  # e.g. a TPU host under JAX_PLATFORMS=tpu
    assert capsys.readouterr().err == ""


def test_cpu_devices_without_a_cpu_backend_is_a_no_op(monkeypatch, capsys) -> None:
    def no_cpu(backend=None):  # what JAX raises under JAX_PLATFORMS=cuda
        raise RuntimeError(f"Unknown backend {backend}")

    monkeypatch.setattr(distributed.jax, "local_device_count", no_cpu)
    assert distributed.set_cpu_device_count(2) is None
    assert capsys.readouterr().err == ""
