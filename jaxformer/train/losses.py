"""Losses and accuracy with padding weights and label smoothing.

Legend: B batch, T length, V vocabulary (or C classes).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def cross_entropy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Weighted sums over all positions: (loss_sum, weight_sum, correct_sum).

    logits [..., V] (any float dtype; computed in float32), targets [...] int, weights [...]
    (0 for padding). With smoothing eps the target distribution is (1 - eps) one-hot + eps / V,
    and the loss is -sum_v q_v log p_v (no constant subtracted). A position is correct when
    its target is the argmax (the first of tied maxima, as `jnp.argmax` picks).
    """
    logits = logits.astype(jnp.float32)
    per_token = token_losses(logits, targets, float(label_smoothing))
    weights = weights.astype(jnp.float32)
    correct = is_argmax(logits, targets).astype(jnp.float32)
    return (per_token * weights).sum(), weights.sum(), (correct * weights).sum()


def is_argmax(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """[...] bool: `jnp.argmax(logits, -1) == targets` for logits [..., V], targets [...] in [0, V).

    The target's logit is beaten by no larger entry and by no equal entry before it (argmax
    takes the first of tied maxima). One compare-and-any pass, without the row maximum: on
    XLA:CPU argmax's value-and-index reduction, or a count that shares the row maximum with the
    softmax, cost 2-4x as much as this pass over the vocabulary.
    """
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)  # [..., 1]
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    beaten = jnp.any((logits > picked) | ((logits == picked) & (ids < targets[..., None])), axis=-1)
    in_range = (targets >= 0) & (targets < logits.shape[-1])
    return ~beaten & in_range


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def token_losses(logits: jax.Array, targets: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-position loss [...] = (1 - eps) * nll + eps * mean_v(-log p_v), p = softmax(logits [..., V]).

    Autodiff of log_softmax gives the same gradient, softmax - q, but on XLA:CPU it keeps
    exp(logits) as an extra [..., V] buffer and turns the target pick into a scatter. The
    custom backward pass forms g * (softmax - q) in one elementwise pass over the saved
    exponentials exp(logits - max), which the forward pass computes anyway for the normalizer:
    keeping them instead of the logits spares the backward pass a second exp over [..., V]
    (the most expensive elementwise op of a CPU training step with a 50k vocabulary).
    """
    return _token_losses_fwd(logits, targets, label_smoothing)[0]


def _token_losses_fwd(
    logits: jax.Array, targets: jax.Array, label_smoothing: float
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    top = logits.max(axis=-1)  # [...], the shift that keeps exp finite
    shifted_exp = jnp.exp(logits - top[..., None])  # [..., V]
    exp_sum = shifted_exp.sum(axis=-1)  # [...]
    log_z = top + jnp.log(exp_sum)
    nll = log_z - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    if label_smoothing > 0.0:
        smooth = log_z - logits.mean(axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return nll, (shifted_exp, targets, exp_sum)


def _token_losses_bwd(
    label_smoothing: float, saved: tuple[jax.Array, jax.Array, jax.Array], g: jax.Array
) -> tuple[jax.Array, None]:
    shifted_exp, targets, exp_sum = saved
    ids = jax.lax.broadcasted_iota(jnp.int32, shifted_exp.shape, shifted_exp.ndim - 1)
    target_mass = jnp.where(ids == targets[..., None], 1.0 - label_smoothing, 0.0)
    q = target_mass + label_smoothing / shifted_exp.shape[-1] if label_smoothing > 0.0 else target_mass
    # g * (softmax - q), softmax = shifted_exp / exp_sum
    return (g / exp_sum)[..., None] * shifted_exp - g[..., None] * q, None


token_losses.defvjp(_token_losses_fwd, _token_losses_bwd)
