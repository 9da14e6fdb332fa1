"""`sharding.state_shardings` works on any state with `.params` / `.opt_state` (it knows no TrainState)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxformer import models, presets, sharding
from jaxformer.config import DEFAULT_RULES


class EmaState(struct.PyTreeNode):
    """Not a TrainState: other fields, another order, an extra parameter-shaped tree."""

    ema_decay: jax.Array
    opt_state: Any
    params: Any
    ema_params: Any


def test_state_shardings_of_a_foreign_state_follow_params_and_replicate_the_rest() -> None:
    config = presets.get("tiny-gpt2")
    tx = optax.adam(1e-3)

    def make() -> EmaState:
        boxed = models.build(config).init(jax.random.PRNGKey(0), **models.dummy_inputs(config))["params"]
        plain = nn.meta.unbox(boxed)
        return EmaState(jnp.float32(0.99), tx.init(plain), boxed, plain)

    abstract = jax.eval_shape(make)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    placed = sharding.state_shardings(abstract, mesh, DEFAULT_RULES)

    assert isinstance(placed, EmaState)
    assert placed.params == sharding.param_shardings(abstract.params, mesh, DEFAULT_RULES)
    plain = nn.meta.unbox(abstract.params)
    assert placed.opt_state == sharding.opt_state_shardings(abstract.opt_state, plain, placed.params, mesh)
    rest = jax.tree.leaves((placed.ema_decay, placed.ema_params))
    assert len(rest) == 1 + len(jax.tree.leaves(plain))
    assert all(s == sharding.replicated(mesh) for s in rest)
    # the logical axes really reached the shardings (embed -> fsdp), unlike the replicated extras
    assert any(s.spec != sharding.replicated(mesh).spec for s in jax.tree.leaves(placed.params))
