"""Learning-rate schedules and Optax optimizers built from a `TrainConfig`."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxformer.errors import ConfigError

NO_DECAY_KEYS = ("positions", "relative_position_bias", "token_types")


def learning_rate_schedule(
    schedule: str,
    peak: float,
    total_steps: int,
    warmup_steps: int,
    end_ratio: float = 0.0,
    d_model: int | None = None,
) -> optax.Schedule:
    """step -> learning rate. Linear warm-up from 0 over `warmup_steps`, then:

    cosine:   end + (peak - end) * (1 + cos(pi * p)) / 2,  p = (step - warmup) / (total - warmup)
    linear:   peak + (end - peak) * p
    constant: peak
    rsqrt:    peak * sqrt(warmup / step)   (continuous with the warm-up at step = warmup)
    noam:     peak * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5), s = step + 1 (Vaswani et al. 2017, eq. 3)
    """
    end = peak * end_ratio
    decay_steps = max(total_steps - warmup_steps, 1)

    def fn(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if schedule == "noam":
            if d_model is None:
                raise ValueError("schedule='noam' needs d_model")
            s = step + 1.0
            return peak * d_model**-0.5 * jnp.minimum(s**-0.5, s * warmup_steps**-1.5)
        warm = peak * step / max(warmup_steps, 1)
        p = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        if schedule == "cosine":
            after = end + (peak - end) * 0.5 * (1.0 + jnp.cos(math.pi * p))
        elif schedule == "linear":
            after = peak + (end - peak) * p
        elif schedule == "constant":
            after = jnp.full_like(step, peak)
        elif schedule == "rsqrt":
            after = peak * jnp.sqrt(warmup_steps / jnp.maximum(step, 1.0))
        else:
            raise ConfigError(f"schedule={schedule!r} is not allowed; choose cosine, linear, constant, rsqrt or noam.")
        return jnp.where(step < warmup_steps, warm, after)

    return fn


def decay_mask(params: Any) -> Any:
    """True for weights that get weight decay: matrices, not norms, biases or position tables."""

    def keep(path: tuple[Any, ...], leaf: jax.Array) -> bool:
        names = [str(getattr(k, "key", k)) for k in path]
        return leaf.ndim >= 2 and not any(n in NO_DECAY_KEYS for n in names)

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(train: Any, d_model: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Optax chain for `train` (a TrainConfig): clip -> optimizer (with masked decoupled weight decay)."""
    schedule = learning_rate_schedule(
        train.schedule, train.learning_rate, train.steps, train.warmup_steps, train.end_learning_rate_ratio, d_model
    )
    parts: list[optax.GradientTransformation] = []
    if train.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(train.grad_clip))
    if train.optimizer == "adamw":
        parts.append(
            optax.adamw(
                schedule, b1=train.b1, b2=train.b2, eps=train.eps, weight_decay=train.weight_decay, mask=decay_mask
            )
        )
    elif train.optimizer == "adafactor":
        parts.append(
            optax.adafactor(
                learning_rate=schedule,
                weight_decay_rate=train.weight_decay or None,
                weight_decay_mask=decay_mask,
                multiply_by_parameter_scale=False,
            )
        )
    elif train.optimizer == "sgd":
        if train.weight_decay:
            parts.append(optax.add_decayed_weights(train.weight_decay, mask=decay_mask))
        parts.append(optax.sgd(schedule, momentum=train.momentum or None))
    else:
        raise ConfigError(f"optimizer={train.optimizer!r} is not allowed; choose adamw, adafactor or sgd.")
    return optax.chain(*parts), schedule


def freeze(tx: optax.GradientTransformation, trainable: Any) -> optax.GradientTransformation:
    """`tx` on the leaves `trainable(names)` accepts (names: the leaf's path as strings); every other leaf
    is frozen: zero updates and no optimizer state (optax.multi_transform with optax.set_to_zero).

    Global-norm clipping inside `tx` then sees the trainable gradients only.
    """

    def labels(params: Any) -> Any:
        def label(path: tuple[Any, ...], _: Any) -> str:
            return "train" if trainable(tuple(str(getattr(k, "key", k)) for k in path)) else "frozen"

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def is_adapter(names: tuple[str, ...]) -> bool:
    """True for LoRA adapter leaves (their path ends in lora_a / lora_b, see models/lora.py)."""
    return bool(names) and names[-1] in ("lora_a", "lora_b")


def make_lora_optimizer(train: Any, d_model: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`make_optimizer` for a tree holding base params and LoRA adapters: only the adapters train."""
    tx, schedule = make_optimizer(train, d_model)
    return freeze(tx, is_adapter), schedule
