"""Two processes (jax.distributed on CPU, gloo collectives) stop at the same step when one is signalled.

SIGTERM goes through JAX's preemption service (`reached_preemption_sync_point`); SIGINT through the
guard's per-step all-gather of the flag. Both processes then save that step together (the state is
split across the two processes) and the saved step directory passes its checksum manifest.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jaxformer.train import integrity

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import jax
    import numpy as np

    process_id, port, workdir = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxformer.config import CheckpointConfig
    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.preemption import PreemptionGuard

    mesh = Mesh(np.array(jax.devices()), ("fsdp",))
    values = np.arange(24, dtype=np.float32).reshape(8, 3)
    state = {"w": jax.make_array_from_callback((8, 3), NamedSharding(mesh, P("fsdp")), lambda index: values[index])}
    checkpointer = Checkpointer(workdir, CheckpointConfig(keep=2))
    guard = PreemptionGuard().install()
    (workdir.parent / f"ready{process_id}").touch()
    step = 0
    while step < 20000:
        step += 1
        time.sleep(0.005)
        if guard.should_stop(step):
            checkpointer.save(step, state, {"step": step}, {})
            checkpointer.wait()
            print(f"process {process_id} stopped at step {step} ({guard.received})", flush=True)
            break
    guard.uninstall()
    checkpointer.close()
    jax.distributed.shutdown()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("sig", "target"),
    [(signal.SIGTERM, 1), pytest.param(signal.SIGINT, 0, marks=pytest.mark.slow)],
    ids=["sigterm", "sigint"],
)
def test_processes_agree_on_the_stop_step(tmp_path, sig, target):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workdir = tmp_path / "run"
    port = str(free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(workdir)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 180
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        procs[target].send_signal(sig)
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    steps = [int(re.search(r"stopped at step (\d+)", out).group(1)) for out, _ in outputs]
    assert steps[0] == steps[1], outputs
    assert f"({sig.name})" in outputs[target][0]
    step_dir = workdir / "checkpoints" / str(steps[0])
    assert integrity.verify(step_dir) is None
