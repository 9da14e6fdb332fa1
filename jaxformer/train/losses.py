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
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if label_smoothing > 0.0:
        smooth = -log_probs.mean(axis=-1)
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    else:
        per_token = nll
    weights = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return (per_token * weights).sum(), weights.sum(), (correct * weights).sum()
