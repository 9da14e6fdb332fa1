"""Attention masks. Convention: boolean, True where a query may attend to a key.

Shapes: queries T, keys S, batch B; masks broadcast as [B, 1, T, S] over heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxformer.errors import InputError


def causal_mask(query_length: int, key_length: int | None = None) -> jax.Array:
    """[1, 1, T, S] lower-triangular mask: query i sees keys j <= i (keys aligned at the end)."""
    key_length = query_length if key_length is None else key_length
    offset = key_length - query_length
    q = jnp.arange(query_length)[:, None]
    k = jnp.arange(key_length)[None, :]
    return (k <= q + offset)[None, None]


def padding_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
    """[B, 1, T, S] mask from validity vectors query_valid [B, T] and key_valid [B, S].

    Rows of padded queries are masked too; their outputs are meaningless and are
    excluded from losses by the loss weights.
    """
    _check_same_batch("padding_mask", query_valid, key_valid)
    return (query_valid[:, None, :, None] & key_valid[:, None, None, :]).astype(bool)


def key_padding_mask(key_valid: jax.Array, query_length: int) -> jax.Array:
    """[B, 1, T, S] mask hiding padded keys only (every query row stays live)."""
    if key_valid.ndim != 2:
        raise InputError(f"key_valid must be [B, S], got shape {key_valid.shape}")
    return jnp.broadcast_to(
        key_valid[:, None, None, :].astype(bool), (key_valid.shape[0], 1, query_length, key_valid.shape[1])
    )


def segment_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
    """[B, 1, T, S] mask for packed rows: attend only within the same segment id (0 = padding)."""
    _check_same_batch("segment_mask", query_segments, key_segments)
    same = query_segments[:, None, :, None] == key_segments[:, None, None, :]
    real = (query_segments[:, None, :, None] > 0) & (key_segments[:, None, None, :] > 0)
    return same & real


def window_mask(query_slots: jax.Array, key_slots: jax.Array, window: jax.Array | int) -> jax.Array:
    """[1, 1, T, S]: key slot k is within `window` of query slot q (q - k < window); window <= 0: all keys.

    query_slots [T] and key_slots [S] are sequence (or cache) indices; `window` may be a traced
    per-layer value (`nn.scan` data), so one compiled layer serves local and global layers.
    """
    window = jnp.asarray(window, jnp.int32)
    near = (query_slots[:, None] - key_slots[None, :]) < window
    return (near | (window <= 0))[None, None]


def combine(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of masks that broadcast together (e.g. [1, 1, T, S] and [B, 1, T, S] -> [B, 1, T, S]).

    None entries are skipped; the result is None if all are None.
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out


def check_mask(mask: jax.Array, batch: int, heads: int, query_length: int, key_length: int, name: str = "mask") -> None:
    """Raise InputError unless `mask` (or the array called `name`, e.g. a bias) broadcasts to [B, N, T, S]."""
    want = (batch, heads, query_length, key_length)
    ok = mask.ndim == 4 and all(m in (1, w) for m, w in zip(mask.shape, want, strict=True))
    if not ok:
        hint = "use [B|1, N|1, T, S]"
        if name == "mask":
            hint = "build masks with jaxformer.layers.masks (they are [B, 1, T, S])"
        raise InputError(f"{name} shape {tuple(mask.shape)} does not broadcast to [B, N, T, S] = {want}; {hint}.")


def _check_same_batch(name: str, a: jax.Array, b: jax.Array) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise InputError(f"{name}: expected [B, T] and [B, S] inputs with the same B, got {a.shape} and {b.shape}")
