"""Positional information: sinusoidal and learned absolute tables, rotary embeddings,
and T5's bucketed relative position bias.

Legend: B batch, T query length, S key length, D model width, N heads, H head size.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.errors import ConfigError
from jaxformer.layers.axes import param
from jaxformer.layers.embed import check_ids_in_range, lookup_rows


def sinusoidal_table(max_len: int, d_model: int, layout: str = "interleaved") -> np.ndarray:
    """[max_len, D] table of Vaswani et al. (2017), section 3.5.

    PE[pos, 2i] = sin(pos / 10000^(2i/D)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/D)).
    layout='interleaved' places them as in the formula; 'concat' puts all sines
    first and all cosines after (the layout of Marian/fairseq checkpoints).
    """
    if d_model % 2:
        raise ConfigError(f"sinusoidal positions need an even d_model, got {d_model}")
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, d_model, 2, dtype=np.float64) / d_model))
    angles = pos * inv_freq[None, :]  # [max_len, D/2]
    table = np.zeros((max_len, d_model), dtype=np.float64)
    if layout == "interleaved":
        table[:, 0::2] = np.sin(angles)
        table[:, 1::2] = np.cos(angles)
    elif layout == "concat":
        table[:, : d_model // 2] = np.sin(angles)
        table[:, d_model // 2 :] = np.cos(angles)
    else:
        raise ConfigError(f"sinusoidal_layout={layout!r} is not allowed; choose one of ['interleaved', 'concat'].")
    return table.astype(np.float32)


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position vectors. positions [B, T] -> [B, T, D]. No parameters."""

    max_len: int
    d_model: int
    layout: str = "interleaved"
    dtype: Any = jnp.float32

    def __call__(self, positions: jax.Array) -> jax.Array:
        table = jnp.asarray(sinusoidal_table(self.max_len, self.d_model, self.layout))
        return lookup_rows(table, positions, None).astype(self.dtype)


class LearnedPositions(nn.Module):
    """Learned absolute position table [max_len + offset, D]. positions [B, T] -> table[positions + offset] [B, T, D].

    `offset` rows come first and are never read by positions 0..max_len-1 (BART/mBART keep 2 there).
    """

    max_len: int
    d_model: int
    init_stddev: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    offset: int = 0

    @nn.compact
    def __call__(self, positions: jax.Array) -> jax.Array:
        table = param(
            self,
            "embedding",
            nn.initializers.normal(self.init_stddev),
            (self.max_len + self.offset, self.d_model),
            ("length", "embed"),
            self.param_dtype,
        )
        check_ids_in_range("positions (max_len)", positions, self.max_len)
        return lookup_rows(table, positions + self.offset, "length").astype(self.dtype)


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), "rotate-half" layout.

    x: [B, T, N, H] (H even), positions: [B, T]. Pairs (x[..., i], x[..., i + H/2])
    are rotated by the angle positions * base^(-2i/H), so the dot product of a
    rotated query and key depends only on their position difference.
    """
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ConfigError(f"rotary embedding needs an even head size, got H={head_dim}")
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim))  # [H/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, H/2]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def relative_position_bucket(
    relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """Map key_pos - query_pos to a bucket id in [0, num_buckets) (Raffel et al. 2020).

    Half of the buckets hold exact small distances; the rest cover distances up to
    `max_distance` on a log scale. Bidirectional buckets keep the sign (half the
    buckets for keys after the query); causal ones only see keys at or before it.
    """
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    safe = jnp.maximum(distance, 1).astype(jnp.float32)
    log_ratio = jnp.log(safe / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


def relative_buckets(
    query_positions: jax.Array, key_positions: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """query_positions [B, T], key_positions [B, S] -> bucket ids [B, T, S] of key_pos - query_pos."""
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # [B, T, S]
    return relative_position_bucket(relative, bidirectional, num_buckets, max_distance)


class RelativePositionBias(nn.Module):
    """T5 relative position bias. Returns [B, N, T, S] logits bias for
    query_positions [B, T] and key_positions [B, S] from one table [buckets, N]
    (per stack in T5; per layer in umT5, where `from_buckets` reuses the stack's bucket ids)."""

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = param(
            self,
            "embedding",
            nn.initializers.normal(1.0),
            (self.num_buckets, self.num_heads),
            ("relpos", "heads"),
            self.param_dtype,
        )

    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        buckets = relative_buckets(
            query_positions, key_positions, self.bidirectional, self.num_buckets, self.max_distance
        )
        return self.from_buckets(buckets)

    def from_buckets(self, buckets: jax.Array) -> jax.Array:
        """buckets [B, T, S] (ids in [0, num_buckets)) -> bias [B, N, T, S]."""
        bias = jnp.take(self.embedding, buckets, axis=0)  # [B, T, S, N]
        return jnp.transpose(bias, (0, 3, 1, 2)).astype(self.dtype)
