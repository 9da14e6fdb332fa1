"""File-system faults for CLI subprocess tests: a full disk, a read-only disk, no permission.

`fault_fs.c` (an LD_PRELOAD shim) makes the libc calls every writer ends in (write/pwrite/writev for
Python files, Orbax's JSON items and tensorstore's C++ array writer; open-for-writing/mkdir/rename for
the read-only kinds) fail with a chosen errno under one directory, optionally only once a marker path
exists, exactly as the kernel answers for a full or read-only disk. `run_cli` starts
`python -m jaxformer.cli ARGS` with it. Needs gcc (the shim is built once per session); tests skip
without it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.paths import REPO_ROOT

SOURCE = Path(__file__).with_name("fault_fs.c")
_BUILT: dict[str, Path] = {}
ERRNOS = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS, "EACCES": errno.EACCES}


def shim() -> Path:
    """The compiled shim (built on first use), or pytest.skip without a C compiler."""
    if "so" not in _BUILT:
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            pytest.skip("no C compiler to build the file-system fault shim")
        out = Path(tempfile.mkdtemp(prefix="jaxformer-fault-fs-")) / "fault_fs.so"
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(SOURCE), "-ldl"], check=True)
        _BUILT["so"] = out
    return _BUILT["so"]


def fault_env(under: Path, kind: str, after: Path | None = None) -> dict[str, str]:
    """Environment variables that make writes under `under` fail with `kind` (once `after` exists, if given)."""
    env = {
        "LD_PRELOAD": str(shim()),
        "JAXFORMER_FAULT_PATH": str(Path(under).resolve()),
        "JAXFORMER_FAULT_ERRNO": str(ERRNOS[kind]),
    }
    if after is not None:
        env["JAXFORMER_FAULT_AFTER"] = str(Path(after).resolve())
    return env


def run_cli(*args: str, faults: dict[str, str] | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    """`python -m jaxformer.cli ARGS` in a fresh process (CPU, offline), with `faults` from fault_env."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAXFORMER_DEBUG", "LD_PRELOAD")}
    env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT), **(faults or {}))
    return subprocess.run(
        [sys.executable, "-m", "jaxformer.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def one_error_line(stderr: str, *fragments: str) -> str:
    """The single `error: ...` line that is all of `stderr` (no traceback, no Orbax logs), holding `fragments`."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-4000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
