"""Training state: parameters, optimizer state, step and the dropout key, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import optax
from flax import struct

from jaxformer import models
from jaxformer.config import ModelConfig


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    dropout_rng: jax.Array

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> TrainState:
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)


def init_state(config: ModelConfig, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Fresh state: parameters from `rng`, a separate stream for dropout."""
    param_rng, dropout_rng = jax.random.split(rng)
    params = models.init_params(config, param_rng)
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params), dropout_rng=dropout_rng
    )


def abstract_state(config: ModelConfig, tx: optax.GradientTransformation) -> Any:
    """Shapes of the state with the params' logical-axis boxes kept (for sharding/restoring)."""

    def make() -> TrainState:
        boxed = models.build(config).init(jax.random.PRNGKey(0), **models.dummy_inputs(config))["params"]
        params = nn.meta.unbox(boxed)
        return TrainState(
            step=jax.numpy.zeros((), jax.numpy.int32),
            params=boxed,
            opt_state=tx.init(params),
            dropout_rng=jax.random.PRNGKey(0),
        )

    return jax.eval_shape(make)
