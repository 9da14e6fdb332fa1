"""Start tests/support/multidevice_worker.py in a subprocess with N fake CPU devices and read its result.

XLA_FLAGS must be set before JAX starts, so multi-device checks run in their own process
instead of changing the device count of the whole pytest session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

SUPPORT = Path(__file__).resolve().parent
TESTS = SUPPORT.parent
REPO_ROOT = TESTS.parent
# Fast XLA compiles on CPU; the numbers compared are computed under the same flags.
FAST_CPU_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def launch(python_args: list[str], devices: int) -> subprocess.Popen:
    """Start `python PYTHON_ARGS` with `devices` fake CPU devices (returns at once)."""
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_CPU_FLAGS}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(TESTS), env.get("PYTHONPATH", "")]),
    )
    return subprocess.Popen(
        [sys.executable, *python_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_worker(args: list[str], devices: int) -> subprocess.Popen:
    """Start `multidevice_worker.py ARGS` with `devices` fake CPU devices."""
    return launch([str(SUPPORT / "multidevice_worker.py"), *args], devices)


def result_of(process: subprocess.Popen, timeout: float = 300, keep_stderr: bool = False) -> dict[str, Any]:
    """Wait for the worker; its `RESULT {json}` line (+ "stderr" if asked), or an assertion showing its stderr."""
    out, err = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, f"worker failed (rc={process.returncode}):\n{err[-4000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    return {**result, "stderr": err} if keep_stderr else result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
