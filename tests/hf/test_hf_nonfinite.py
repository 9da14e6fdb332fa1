"""Weights with NaN/inf (a diverged model saved, or damaged bytes: safetensors has no checksum) are named
when read: `hf.load` and checkpoint restore refuse them unless `allow_nonfinite=True`, which warns instead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file, save_file

from jaxformer import hf, presets
from jaxformer.hf.convert import nested, param_shapes
from jaxformer.models import finite
from jaxformer.train import checkpoint as ck
from jaxformer.train.state import init_state


def random_params(config, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.2, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


def damage(directory, name: str, index: tuple, value: float) -> None:
    tensors = load_file(str(directory / "model.safetensors"))
    tensors[name] = tensors[name].copy()
    tensors[name][index] = value
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def gpt2_dir(tmp_path):
    config = presets.get("tiny-gpt2")
    return hf.save(config, random_params(config), tmp_path / "gpt2")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_hf_load_names_the_nonfinite_tensor(gpt2_dir, value: float) -> None:
    damage(gpt2_dir, "transformer.h.1.mlp.c_fc.weight", (2, 3), value)
    with pytest.raises(
        finite.NonFiniteWeightsError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight \(1 of \d+\).*allow_nonfinite"
    ):
        hf.load(gpt2_dir)


def test_allow_nonfinite_loads_with_a_warning(gpt2_dir, capsys: pytest.CaptureFixture[str]) -> None:
    damage(gpt2_dir, "transformer.wte.weight", (0, 0), np.nan)
    _, params, _ = hf.load(gpt2_dir, allow_nonfinite=True)
    assert "WARNING" in capsys.readouterr().err
    assert sum(int(np.isnan(np.asarray(leaf)).sum()) for leaf in jax.tree.leaves(params)) == 1


def test_bfloat16_and_integer_tensors_are_checked_correctly() -> None:
    good = np.ones((3,), ml_dtypes.bfloat16)
    bad = good.copy()
    bad[1] = np.inf
    found = finite.nonfinite_tensors([("good", good), ("bad", bad), ("ids", np.array([1, 2]))])
    assert found == [("bad", 1, 3)]
    assert finite.nonfinite_tensors([("dev", jnp.array([1.0, jnp.nan, jnp.nan]))]) == [("dev", 2, 3)]


def test_restore_refuses_a_nonfinite_checkpoint_and_falls_back(tmp_path) -> None:
    config = presets.get("tiny-gpt2")
    state = init_state(config, optax.adamw(1e-3), jax.random.PRNGKey(0))
    checkpointer = ck.Checkpointer(tmp_path, warn=lambda message: warnings.append(message))
    warnings: list[str] = []
    checkpointer.save(1, state.replace(step=jnp.int32(1)), {"position": 1}, {"model": config.to_dict()})
    poisoned = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.params)
    checkpointer.save(
        2, state.replace(step=jnp.int32(2), params=poisoned), {"position": 2}, {"model": config.to_dict()}
    )
    checkpointer.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    with pytest.raises(ck.CheckpointCorruptError, match=r"step 2 .* NaN/inf parameters"):
        checkpointer.restore(2, abstract)
    restored = checkpointer.restore_latest(abstract)
    assert restored is not None and restored.step == 1  # the finite checkpoint before it
    assert any("NaN/inf" in message for message in warnings)
    checkpointer.close()
    with pytest.raises(finite.NonFiniteWeightsError, match="params has NaN/inf weights"):
        finite.check_finite(poisoned, "params")
