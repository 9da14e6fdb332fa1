"""The "cache" collection of a decode-mode model: creation, batch axes, beam expansion and reordering.

A cache is the plain pytree that `model.apply(..., mutable=["cache"])` returns.
Its arrays hold per-row state ([B, K, H, S_max] keys/values, [B, S_max] validity,
[B, K, H, S] cross-attention keys/values, [B, S_max] key positions) and shared
scalars (`cache_index`, `position_index`). With `config.scan_layers=True` the
arrays of the scanned layers get a leading layers axis L ([L, B, ...], and
`cache_index` becomes [L]), while stack-level entries keep batch at axis 0.
`cache_batch_axes` finds the batch axis of every entry by comparing the cache
shapes of two batch sizes, so no layout is assumed.

Legend: B batch, W beams, S_max cache length, S source length, K kv heads, H head size, L layers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxformer import models
from jaxformer.config import ModelConfig
from jaxformer.errors import InputError

Cache = Any  # nested dict of arrays


def cache_shapes(config: ModelConfig, batch: int, cache_length: int, source_length: int | None = None) -> Cache:
    """Abstract cache (`jax.ShapeDtypeStruct` leaves) for `batch` rows and `cache_length` slots; nothing is allocated.

    Encoder-decoder models also cache cross-attention keys/values and need `source_length` S.
    """
    model = models.build(config, decode=True)
    target = jax.ShapeDtypeStruct((batch, cache_length), jnp.int32)
    if config.family == "encoder_decoder":
        if source_length is None:
            raise InputError("an encoder_decoder cache needs source_length (the padded source length S).")
        source = jax.ShapeDtypeStruct((batch, source_length), jnp.int32)
        variables = jax.eval_shape(lambda s, t: model.init(jax.random.PRNGKey(0), s, t), source, target)
    else:
        variables = jax.eval_shape(lambda t: model.init(jax.random.PRNGKey(0), t), target)
    return variables["cache"]


def init_cache(config: ModelConfig, batch: int, cache_length: int, source_length: int | None = None) -> Cache:
    """A zero cache for `batch` rows and `cache_length` self-attention slots (+ S=`source_length` cross slots).

    Pass it as `{"params": params, "cache": cache}` with `mutable=["cache"]`. For an
    encoder-decoder the first `decode_step` must pass `encoded` [B, S, D] (that call
    fills the cross-attention keys/values); later calls pass `encoded=None`.
    """
    if cache_length > config.max_len:
        raise InputError(f"cache_length={cache_length} exceeds the model's max_len={config.max_len}.")
    shapes = cache_shapes(config, batch, cache_length, source_length)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def cache_batch_axes(config: ModelConfig, cache_length: int, source_length: int | None = None) -> Cache:
    """Tree like the cache holding, per entry, its batch axis (int) or -1 for shared entries (scalar indices)."""
    one = cache_shapes(config, 1, cache_length, source_length)
    two = cache_shapes(config, 2, cache_length, source_length)
    return jax.tree.map(_axis_that_differs, one, two)


def cache_slot_axes(config: ModelConfig, cache_length: int, source_length: int | None = None) -> Cache:
    """Tree like the cache holding, per entry, its slot axis (the one of length `cache_length`), or -1
    (scalar indices, cross-attention keys/values over the source)."""
    shorter = cache_shapes(config, 1, max(cache_length - 1, 1), source_length)
    longer = cache_shapes(config, 1, max(cache_length - 1, 1) + 1, source_length)
    return jax.tree.map(_axis_that_differs, shorter, longer)


def _axis_that_differs(a: jax.ShapeDtypeStruct, b: jax.ShapeDtypeStruct) -> int:
    differ = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)) if x != y]
    return differ[0] if differ else -1


def slot_count(cache: Cache, slot_axes: Cache) -> int:
    """The number of self-attention slots of a cache (its `cache_length`)."""
    sizes = {
        x.shape[axis] for x, axis in zip(jax.tree.leaves(cache), jax.tree.leaves(slot_axes), strict=True) if axis >= 0
    }
    if len(sizes) != 1:
        raise ValueError(f"cache entries disagree on their number of slots: {sorted(sizes)}")
    return sizes.pop()


def resize_slots(cache: Cache, slot_axes: Cache, length: int) -> Cache:
    """The same cache with `length` slots: cut at the end, or extended with empty slots (zeros, as `init_cache`).

    The cache index is untouched: cutting must keep every slot written so far.
    """

    def resize(x: jax.Array, axis: int) -> jax.Array:
        if axis < 0 or x.shape[axis] == length:
            return x
        if x.shape[axis] > length:
            return jax.lax.slice_in_dim(x, 0, length, axis=axis)
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, length - x.shape[axis])
        return jnp.pad(x, widths)

    return jax.tree.map(resize, cache, slot_axes)


def repeat_cache(cache: Cache, batch_axes: Cache, repeats: int) -> Cache:
    """Repeat every row `repeats` times along its batch axis: B rows -> B * W rows, row b * W + w copies row b."""
    return jax.tree.map(lambda x, axis: x if axis < 0 else jnp.repeat(x, repeats, axis=axis), cache, batch_axes)


def gather_cache(cache: Cache, batch_axes: Cache, rows: jax.Array) -> Cache:
    """Select rows [B'] (int indices, in range) along each entry's batch axis; shared entries are kept as they are."""
    # mode="clip": XLA's gather clamps anyway; the default "fill" adds a select pass over every entry.
    return jax.tree.map(lambda x, axis: x if axis < 0 else jnp.take(x, rows, axis=axis, mode="clip"), cache, batch_axes)


# Entries written once, before the token loop: the cross-attention keys/values of the encoded source.
FIXED_ENTRIES = ("cross_key", "cross_value")


def gather_beams(cache: Cache, batch_axes: Cache, parents: jax.Array) -> Cache:
    """`gather_cache` for beam search, where parents [B * W] of row b * W + w lie in rows b * W .. b * W + W - 1.

    The beams of one batch entry share their `FIXED_ENTRIES` (copies made by `repeat_cache`), so
    those are left in place instead of being copied at every step.
    """

    def fixed(path: tuple) -> bool:
        return getattr(path[-1], "key", None) in FIXED_ENTRIES

    axes = jax.tree_util.tree_map_with_path(lambda path, axis: -1 if fixed(path) else axis, batch_axes)
    return gather_cache(cache, axes, parents)
