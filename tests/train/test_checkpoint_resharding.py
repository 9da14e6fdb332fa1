"""A checkpoint saved on one device layout restores onto another (8 fake CPU devices, in a subprocess).

Saved with the state sharded fsdp=8 (jaxformer.sharding + the default logical-axis rules), restored
onto a single device, onto data=4 (replicated over 4 devices) and onto fsdp=2 x tensor=4; every leaf
must come back bit-identical and placed as the target asks. Params-only restore is checked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import optax
    from jax.sharding import SingleDeviceSharding

    from jaxformer import presets, sharding
    from jaxformer.experiment import DEFAULT_RULES
    from jaxformer.train import checkpoint as ck
    from jaxformer.train.state import abstract_state, init_state

    workdir = sys.argv[1]
    assert jax.device_count() == 8, jax.devices()
    config = presets.get("tiny-gpt2", d_model=40)  # 40 splits over 8 devices
    tx = optax.adamw(1e-3)
    boxed = abstract_state(config, tx)

    def placed_on(sizes, devices):
        mesh = sharding.make_mesh(sizes, devices)
        return sharding.state_shardings(boxed, mesh, DEFAULT_RULES)

    fsdp8 = placed_on({"data": 1, "fsdp": 8, "tensor": 1}, jax.devices())
    state = jax.jit(lambda rng: init_state(config, tx, rng), out_shardings=fsdp8)(jax.random.PRNGKey(3))
    split = [x for x in jax.tree.leaves(state.params) if not x.sharding.is_fully_replicated]
    assert len(split) >= 4, "the fsdp=8 state should really be split"
    expected = jax.tree.map(np.asarray, state)
    saver = ck.Checkpointer(workdir)
    saver.save(5, state, {"position": 5}, {"model": config.to_dict()})
    saver.close()

    one = SingleDeviceSharding(jax.devices()[0])
    targets = {
        "single device": jax.tree.map(lambda _: one, state),
        "data=4": placed_on({"data": 4, "fsdp": 1, "tensor": 1}, jax.devices()[:4]),
        "fsdp=2 x tensor=4": placed_on({"data": 1, "fsdp": 2, "tensor": 4}, jax.devices()),
    }
    for name, shardings in targets.items():
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
        restored = ck.Checkpointer(workdir).restore_latest(target)
        assert restored.step == 5 and restored.data_state == {"position": 5}, name
        for got, want, where in zip(
            jax.tree.leaves(restored.state), jax.tree.leaves(expected), jax.tree.leaves(shardings), strict=True
        ):
            assert got.sharding == where, (name, got.sharding, where)
            np.testing.assert_array_equal(np.asarray(got), want)
        print("restored onto", name, flush=True)

    params, model_config = ck.restore_params(workdir)
    assert model_config == config
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected.params), strict=True):
        assert got.sharding == one
        np.testing.assert_array_equal(np.asarray(got), want)
    print("params-only OK", flush=True)
    """
)


def test_restore_onto_other_device_layouts(tmp_path):
    script = tmp_path / "reshard.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    for name in ("single device", "data=4", "fsdp=2 x tensor=4"):
        assert f"restored onto {name}" in result.stdout
    assert "params-only OK" in result.stdout
