"""Pure train and eval steps (jit them, or pmap them, outside).

The train step splits the batch into `grad_accum_steps` micro-batches, sums the
weighted losses and gradients over them with `lax.scan`, and divides by the total
weight once — so k micro-batches give exactly the update of one k-times larger batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxformer.config import ModelConfig
from jaxformer.train import tasks
from jaxformer.train.losses import cross_entropy
from jaxformer.train.state import TrainState

Batch = dict[str, jax.Array]


def make_train_step(
    model: Any,
    config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum_steps: int = 1,
    label_smoothing: float = 0.0,
    axis_name: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """(state, batch) -> (state, metrics). `axis_name` set: gradients/metrics are summed across it (pmap)."""

    def micro_sums(params: Any, micro: Batch, rng: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        logits, targets, weights = tasks.forward(model, params, config, micro, rngs={"dropout": rng})
        loss_sum, weight_sum, correct = cross_entropy(logits, targets, weights, label_smoothing)
        return loss_sum, (weight_sum, correct)

    grad_fn = jax.value_and_grad(micro_sums, has_aux=True)

    def finish(
        state: TrainState, grads: Any, loss_sum: jax.Array, weight_sum: jax.Array, correct: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Sum across devices (pmap), normalise by the total weight, apply the update."""
        if axis_name is not None:
            grads, loss_sum, weight_sum, correct = jax.lax.psum((grads, loss_sum, weight_sum, correct), axis_name)
        denom = jnp.maximum(weight_sum, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        new_state = state.apply_gradients(grads, tx)
        grad_norm = optax.global_norm(grads)
        # One reduction over the new parameters: the loop checks this flag before every save (issue 20).
        finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(new_state.params))
        metrics = {
            "loss": loss_sum / denom,
            "accuracy": correct / denom,
            "grad_norm": grad_norm,
            "finite": finite,
            "learning_rate": schedule(state.step),
            "tokens": weight_sum,
        }
        return new_state, metrics

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.dropout_rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        if grad_accum_steps == 1:  # no zero buffers to accumulate into (they cost a pass over all parameters)
            (loss_sum, (weight_sum, correct)), grads = grad_fn(state.params, batch, jax.random.fold_in(rng, 0))
            return finish(state, grads, loss_sum, weight_sum, correct)
        micro_batches = jax.tree.map(lambda x: x.reshape((grad_accum_steps, -1, *x.shape[1:])), batch)

        def accumulate(carry: Any, inputs: Any) -> Any:
            grads_acc, loss_acc, weight_acc, correct_acc = carry
            micro, index = inputs
            (loss_sum, (weight_sum, correct)), grads = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
            grads_acc = jax.tree.map(jnp.add, grads_acc, grads)
            return (grads_acc, loss_acc + loss_sum, weight_acc + weight_sum, correct_acc + correct), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        init = (zeros, jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
        (grads, loss_sum, weight_sum, correct), _ = jax.lax.scan(
            accumulate, init, (micro_batches, jnp.arange(grad_accum_steps))
        )
        return finish(state, grads, loss_sum, weight_sum, correct)

    return step


def make_eval_step(
    model: Any, config: ModelConfig, axis_name: str | None = None
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """(params, batch) -> sums {loss_sum, weight_sum, correct_sum} (plain NLL, no smoothing)."""

    def step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        logits, targets, weights = tasks.forward(model, params, config, batch)
        loss_sum, weight_sum, correct = cross_entropy(logits, targets, weights)
        sums = {"loss_sum": loss_sum, "weight_sum": weight_sum, "correct_sum": correct}
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return sums

    return step
