"""Training state: parameters, optimizer state, step and the dropout key, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import optax
from flax import struct

from jaxformer import models
from jaxformer.config import LoraConfig, ModelConfig
from jaxformer.models import lora as lora_lib


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


def state_from_params(params: Any, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Fresh state around given parameters (an imported checkpoint, or a LoRA run's fresh adapters); the
    dropout stream is the one `init_state(rng)` uses."""
    _, dropout_rng = jax.random.split(rng)
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params), dropout_rng=dropout_rng
    )


def base_rng(rng: jax.Array) -> jax.Array:
    """The key `init_state(rng)` initialises parameters from (a LoRA run's base without init_from)."""
    return jax.random.split(rng)[0]


def init_lora_state(lora: LoraConfig, base: Any, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """A LoRA run's fresh state: its params are the adapters of `base` (B = 0, so the model starts as the base)."""
    adapters = lora_lib.init_lora(lora, base, jax.random.fold_in(base_rng(rng), 1))
    return state_from_params(adapters, tx, rng)


def abstract_lora_state(config: ModelConfig, lora: LoraConfig, tx: optax.GradientTransformation) -> Any:
    """Shapes of a LoRA run's state, the adapters boxed with the logical axes of the kernels they adapt."""
    boxed = models.abstract_params(config)
    axes = lora_lib.lora_logical_axes(lora, boxed)

    def make() -> TrainState:
        state = init_lora_state(lora, nn.meta.unbox(boxed), tx, jax.random.PRNGKey(0))
        return state.replace(params=lora_lib.box(state.params, axes))

    return jax.eval_shape(make)
