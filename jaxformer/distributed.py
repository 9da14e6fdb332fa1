"""Joining the processes of a multi-host run (`jax.distributed`), before JAX touches a device.

Every host runs the same `jaxformer train ...` command. Each process sees its own devices;
after `jax.distributed.initialize` the mesh spans the devices of every process, each process
feeds its own rows of the global batch, only process 0 writes logs, and all processes write
their parts of each checkpoint together.

How the processes find each other, first match wins:
  1. explicit arguments (CLI `--coordinator_address HOST:PORT --num_processes N --process_id I`),
  2. environment JAXFORMER_COORDINATOR / JAXFORMER_NUM_PROCESSES / JAXFORMER_PROCESS_ID,
  3. a Cloud TPU VM or a SLURM step with several tasks: `jax.distributed.initialize()` with no
     arguments, which reads the TPU metadata / SLURM variables itself,
  4. otherwise one process, nothing to do.

`set_cpu_device_count` is the other setting that must come before JAX starts: how many XLA
devices the host CPU is split into (`mesh.cpu_devices`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import jax

from jaxformer.errors import ConfigError, DeviceError

ENV_COORDINATOR = "JAXFORMER_COORDINATOR"
ENV_NUM_PROCESSES = "JAXFORMER_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXFORMER_PROCESS_ID"
DEFAULT_TIMEOUT_S = 300  # how long a process waits for the coordinator and the other processes


class CoordinatorUnreachableError(DeviceError):
    """No coordinator answered at the given address within the start-up timeout (a user-fixable setting)."""


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Block until a TCP connection to `address` (HOST:PORT) succeeds, or raise after `timeout_s`.

    `jax.distributed.initialize` in a non-coordinator process that cannot reach its coordinator
    aborts the whole interpreter from C++ when its deadline passes (no Python exception, a
    stack dump), so processes other than 0 check the address first and fail with one line.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(2.0, max(timeout_s, 0.1))):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise CoordinatorUnreachableError(
                    f"no coordinator answered at {address} within {timeout_s:g} s ({err.strerror or err}); start "
                    "process 0 (it hosts the coordinator) with the same --coordinator_address, check the address "
                    "and port, or wait longer with --coordinator_timeout SECONDS."
                ) from None
            time.sleep(0.25)


def _int_setting(name: str, value: int | str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} must be an integer.") from None


def on_cloud_tpu(environ: Mapping[str, str] = os.environ) -> bool:
    """A Cloud TPU VM: libtpu installed, and the TPU runtime's variables or TPU device files present."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    if any(key in environ for key in ("TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "CLOUD_TPU_TASK_ID")):
        return True
    return Path("/dev/accel0").exists() or Path("/dev/vfio/0").exists()


def in_slurm_step(environ: Mapping[str, str] = os.environ) -> bool:
    """Started by `srun` with more than one task (a batch script alone is not a multi-process step)."""
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
    return "SLURM_PROCID" in environ and tasks is not None and tasks.isdigit() and int(tasks) > 1


def maybe_initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] = os.environ,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Join the other processes of this run if there are any. Returns how: "explicit", "tpu",
    "slurm", "single" (nothing done) or "already" (initialized before). Raises ConfigError for an
    incomplete explicit setting."""
    if jax.distributed.is_initialized():
        return "already"
    coordinator_address = coordinator_address or environ.get(ENV_COORDINATOR) or None
    count = _int_setting(
        "num_processes", num_processes if num_processes is not None else environ.get(ENV_NUM_PROCESSES)
    )
    index = _int_setting("process_id", process_id if process_id is not None else environ.get(ENV_PROCESS_ID))
    if coordinator_address is not None:
        if count is None or index is None:
            raise ConfigError(
                f"coordinator_address={coordinator_address!r} needs --num_processes and --process_id "
                f"(or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID})."
            )
        if count < 1:
            raise ConfigError(f"num_processes={count} must be >= 1 (the number of processes in the run).")
        if timeout_s <= 0:
            raise ConfigError(f"coordinator_timeout={timeout_s:g} must be > 0 seconds.")
        if not 0 <= index < count:
            raise ConfigError(f"process_id={index} must be in [0, num_processes={count}).")
        if ":" not in coordinator_address:
            raise ConfigError(f"coordinator_address={coordinator_address!r} must look like HOST:PORT.")
        print(
            f"jaxformer: process {index} of {count} joining through the coordinator at {coordinator_address} "
            f"(waiting up to {timeout_s:g} s)",
            file=sys.stderr,
            flush=True,
        )
        if index != 0:  # process 0 hosts the coordinator; the others must reach it first
            wait_for_coordinator(coordinator_address, timeout_s)
        jax.distributed.initialize(
            coordinator_address, num_processes=count, process_id=index, initialization_timeout=int(max(1, timeout_s))
        )
        return "explicit"
    if count is not None or index is not None:
        raise ConfigError(
            f"num_processes/process_id given without a coordinator address; add --coordinator_address HOST:PORT "
            f"(or {ENV_COORDINATOR})."
        )
    if on_cloud_tpu(environ):
        jax.distributed.initialize()
        return "tpu"
    if in_slurm_step(environ):
        jax.distributed.initialize()
        return "slurm"
    return "single"


def set_cpu_device_count(count: int) -> int | None:
    """Split the host CPU into `count` XLA devices (`mesh.cpu_devices`); return the CPU devices in effect
    (None: nothing asked, count 0, or no CPU backend, as under JAX_PLATFORMS=cuda).

    Why: XLA:CPU runs one device's program as a single chain of kernels, and the small ones
    (norms, activations, residual adds of a small model) each run on one core. The programs of
    several CPU devices run at the same time, so a data-parallel mesh over one device per core
    keeps every core busy (benchmarks/results/PERFORMANCE.md, "one XLA device per core"). The
    math is the same data-parallel step as on N accelerators.

    Only the CPU platform changes: on a GPU or TPU host the mesh is built over the accelerators
    and the CPU devices go unused. 0 leaves JAX alone (one CPU device, or what XLA_FLAGS'
    --xla_force_host_platform_device_count asks for). JAX reads the setting when it first starts
    a backend; if that already happened with another count, the run goes on with the devices
    there are and says so (the speed differs; the results agree to rounding).
    """
    if count == 0:
        return None
    with contextlib.suppress(RuntimeError):  # raised once a backend has started: the CPU devices are fixed
        jax.config.update("jax_num_cpu_devices", count)
    try:
        have = jax.local_device_count("cpu")
    except RuntimeError:  # JAX_PLATFORMS leaves the CPU out: there is nothing to split
        return None
    if have != count:
        _warn_not_applied(count, have)
    return have


@functools.cache  # `jaxformer train` and train_and_evaluate both apply the setting: say it once
def _warn_not_applied(count: int, have: int) -> None:
    print(
        f"warning: mesh.cpu_devices={count} not applied: JAX already started in this process with {have} "
        "CPU device(s); set it before the first JAX operation (jaxformer train does), or start Python with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={count}.",
        file=sys.stderr,
        flush=True,
    )
