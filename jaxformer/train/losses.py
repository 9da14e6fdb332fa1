"""Losses and accuracy with padding weights and label smoothing.

Legend: B batch, T length, V vocabulary (or C classes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Weighted sums over all positions: (loss_sum, weight_sum, correct_sum).

    logits [..., V] (any float dtype; computed in float32), targets [...] int, weights [...]
    (0 for padding). With smoothing eps the target distribution is (1 - eps) one-hot + eps / V,
    and the loss is -sum_v q_v log p_v (no constant subtracted).
    """
    logits = logits.astype(jnp.float32)
    shifted = logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))  # log_softmax = shifted - lse
    lse = jnp.log(jnp.exp(shifted).sum(axis=-1))  # [...]
    # The target's entry picked by a compare-and-sum, not take_along_axis: its gradient is an elementwise
    # select instead of a scatter into a [..., V] buffer (a costly extra pass on CPU).
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    picked = jnp.where(vocab_ids == targets[..., None], shifted, 0.0).sum(axis=-1)
    nll = lse - picked
    if label_smoothing > 0.0:
        smooth = lse - shifted.mean(axis=-1)
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    else:
        per_token = nll
    weights = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return (per_token * weights).sum(), weights.sum(), (correct * weights).sum()
