"""Logical axis names and a helper that creates parameters annotated with them.

Parameter axes (mapped to mesh axes by the rules in the experiment config):

    vocab       token vocabulary (V)
    embed       model width (D)
    heads       query heads (N)
    kv_heads    key/value heads (K)
    kv          size of one head (H)
    mlp         feed-forward hidden units (F)
    length      absolute positions (learned position tables)
    token_types BERT segment types
    relpos      relative-position buckets
    classes     classifier outputs
    layers      the stacked-layer axis that `nn.scan` adds

Activation axes (used with `nn.with_logical_constraint`): `activation_batch`,
`activation_length`, `activation_embed`, `activation_heads`, `activation_kv`,
`activation_mlp`, `activation_vocab`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PARAM_AXES = (
    "vocab",
    "embed",
    "heads",
    "kv_heads",
    "kv",
    "mlp",
    "length",
    "token_types",
    "relpos",
    "classes",
    "layers",
)
ACTIVATION_AXES = (
    "activation_batch",
    "activation_length",
    "activation_embed",
    "activation_heads",
    "activation_kv",
    "activation_mlp",
    "activation_vocab",
)
ALL_AXES = PARAM_AXES + ACTIVATION_AXES

# [B, T, D] activations, the most common constraint.
BTD = ("activation_batch", "activation_length", "activation_embed")

Initializer = Callable[..., jax.Array]


def param(
    module: nn.Module,
    name: str,
    init: Initializer,
    shape: Sequence[int],
    axes: Sequence[str],
    dtype: Any = jnp.float32,
) -> Any:
    """Create parameter `name` of `shape`, annotated with logical `axes` (one per dimension)."""
    if len(axes) != len(shape):
        raise ValueError(f"parameter {name!r}: {len(axes)} axis names {tuple(axes)} for shape {tuple(shape)}")
    unknown = [a for a in axes if a not in PARAM_AXES]
    if unknown:
        raise ValueError(f"parameter {name!r}: unknown logical axis {unknown[0]!r}; known: {PARAM_AXES}")
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical activation names (a no-op outside a mesh + rules context)."""
    return nn.with_logical_constraint(x, tuple(axes))
