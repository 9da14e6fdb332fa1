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
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import jax

from jaxformer.errors import ConfigError

ENV_COORDINATOR = "JAXFORMER_COORDINATOR"
ENV_NUM_PROCESSES = "JAXFORMER_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXFORMER_PROCESS_ID"


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
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"process_id={index} must be in [0, num_processes={count}).")
        if ":" not in coordinator_address:
            raise ConfigError(f"coordinator_address={coordinator_address!r} must look like HOST:PORT.")
        jax.distributed.initialize(coordinator_address, num_processes=count, process_id=index)
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
