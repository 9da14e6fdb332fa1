"""Schedules, losses, gradient accumulation and the weight-decay mask against hand formulas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import models, presets
from jaxformer.config import TrainConfig
from jaxformer.train.losses import cross_entropy
from jaxformer.train.optim import decay_mask, learning_rate_schedule, make_optimizer
from jaxformer.train.state import init_state
from jaxformer.train.step import make_train_step

STEPS, WARMUP, PEAK = 100, 10, 3e-3


def expected_lr(schedule: str, step: int, end_ratio: float = 0.1, d_model: int = 64) -> float:
    end = PEAK * end_ratio
    if schedule == "noam":
        s = step + 1
        return PEAK * d_model**-0.5 * min(s**-0.5, s * WARMUP**-1.5)
    if step < WARMUP:
        return PEAK * step / WARMUP
    p = min(max((step - WARMUP) / (STEPS - WARMUP), 0.0), 1.0)
    return {
        "cosine": end + (PEAK - end) * 0.5 * (1 + math.cos(math.pi * p)),
        "linear": PEAK + (end - PEAK) * p,
        "constant": PEAK,
        "rsqrt": PEAK * math.sqrt(WARMUP / max(step, 1)),
    }[schedule]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "rsqrt", "noam"])
def test_schedule_matches_formula(schedule):
    fn = learning_rate_schedule(schedule, PEAK, STEPS, WARMUP, end_ratio=0.1, d_model=64)
    for step in (0, 1, 5, 9, 10, 11, 37, 55, 99, 100, 150):
        np.testing.assert_allclose(float(fn(step)), expected_lr(schedule, step), rtol=1e-5, atol=1e-12)


def test_cross_entropy_label_smoothing_by_hand():
    logits = jnp.array([[[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]])  # [B=1, T=2, V=3]
    targets = jnp.array([[0, 2]])
    weights = jnp.array([[1.0, 1.0]])
    eps = 0.1
    loss_sum, weight_sum, correct = cross_entropy(logits, targets, weights, label_smoothing=eps)
    expected = 0.0
    for t in range(2):
        row = np.array(logits[0, t], np.float64)
        log_p = row - np.log(np.exp(row).sum())
        q = np.full(3, eps / 3)
        q[int(targets[0, t])] += 1 - eps
        expected += -(q * log_p).sum()
    np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-6)
    assert float(weight_sum) == 2.0
    assert float(correct) == 2.0  # argmax 0 at t=0 and 2 at t=1


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_gradient_is_weighted_softmax_minus_target(eps):
    """The custom backward pass (built from the forward's saved exponentials) against NumPy float64."""
    rng = np.random.default_rng(3)
    vocab = 11
    logits = rng.normal(scale=3.0, size=(2, 4, vocab)).astype(np.float32)
    logits[1, 2, 5] = 40.0  # a dominant logit: the max shift matters
    logits[0, 1, :3] = -np.inf  # masked vocabulary entries get zero probability and zero gradient
    targets = rng.integers(3, vocab, size=(2, 4))
    weights = rng.uniform(0.5, 2.0, size=(2, 4)).astype(np.float32)
    weights[1, 3] = 0.0

    if eps > 0.0:
        logits[0, 1, :3] = -30.0  # smoothing puts mass on every entry: keep the loss finite
    grad = jax.grad(lambda x: cross_entropy(x, jnp.asarray(targets), jnp.asarray(weights), eps)[0])(jnp.asarray(logits))

    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    q = np.full(logits.shape, eps / vocab)
    np.put_along_axis(q, targets[..., None], 1.0 - eps + eps / vocab, axis=-1)
    expected = weights[..., None] * (softmax - q)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)

    # and the same as autodiff of a plain log-softmax loss
    def plain(x):
        log_p = jax.nn.log_softmax(x, axis=-1)
        log_p = jnp.where(jnp.isfinite(log_p), log_p, 0.0)  # q is 0 on masked entries
        return -((jnp.asarray(q, jnp.float32) * log_p).sum(-1) * jnp.asarray(weights)).sum()

    np.testing.assert_allclose(np.asarray(grad), np.asarray(jax.grad(plain)(jnp.asarray(logits))), atol=1e-6)


def test_loss_masking_ignores_padding():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 7, size=(2, 5)))
    weights = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], jnp.float32)
    base = cross_entropy(logits, targets, weights)
    # Garbage at padded positions changes nothing.
    logits2 = logits.at[0, 3:].set(100.0).at[1, 4].set(-50.0)
    targets2 = targets.at[0, 3:].set(6)
    other = cross_entropy(logits2, targets2, weights)
    for a, b in zip(base, other, strict=True):
        np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    assert float(base[1]) == 7.0


def _lm_batch(rng: np.random.Generator, batch: int, length: int, vocab: int) -> dict[str, jnp.ndarray]:
    tokens = rng.integers(3, vocab, size=(batch, length + 1))
    weights = np.ones((batch, length), np.float32)
    for row in range(batch):  # ragged rows: padding at the end
        cut = int(rng.integers(length // 2, length + 1))
        weights[row, cut:] = 0
        tokens[row, cut + 1 :] = 0
    return {
        "tokens": jnp.asarray(tokens[:, :-1], jnp.int32),
        "targets": jnp.asarray(tokens[:, 1:], jnp.int32),
        "weights": jnp.asarray(weights),
    }


def test_gradient_accumulation_equals_large_batch():
    config = presets.get("tiny-gpt2")
    model = models.build(config)
    # Plain SGD with lr=1: the parameter change IS the gradient, so this compares gradients directly
    # (Adam would amplify float noise in near-zero gradients through g / sqrt(v)).
    train = TrainConfig(
        steps=10,
        batch_size=8,
        learning_rate=1.0,
        warmup_steps=0,
        schedule="constant",
        grad_clip=0.0,
        optimizer="sgd",
        momentum=0.0,
    )
    tx, schedule = make_optimizer(train, config.d_model)
    state = init_state(config, tx, jax.random.PRNGKey(0))
    batch = _lm_batch(np.random.default_rng(1), 8, 9, config.vocab_size)
    one = jax.jit(make_train_step(model, config, tx, schedule, grad_accum_steps=1))
    four = jax.jit(make_train_step(model, config, tx, schedule, grad_accum_steps=4))
    state1, metrics1 = one(state, batch)
    state4, metrics4 = four(state, batch)
    np.testing.assert_allclose(float(metrics1["loss"]), float(metrics4["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(metrics1["grad_norm"]), float(metrics4["grad_norm"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state4.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6)


def test_weight_decay_mask_skips_norms_biases_and_position_tables():
    params = models.init_params(presets.get("tiny-gpt2"), jax.random.PRNGKey(0))
    mask = decay_mask(params)
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)
    }
    assert flat["decoder/layers_0/mlp/up_kernel"] is True
    assert flat["decoder/layers_0/mlp/up_bias"] is False
    assert flat["decoder/final_norm/scale"] is False
    assert flat["embedding/positions/embedding"] is False
    assert flat["embed/embedding"] is True
