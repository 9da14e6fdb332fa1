"""Scaled dot-product attention and multi-head attention (self/cross, GQA/MQA, KV cache).

Legend (used in every einsum here):
    B batch   T query length   S key length   D model width
    N query heads   K key/value heads   G = N // K query heads per kv head   H head size
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import AttentionImpl, allowed_values, check_choice, check_heads
from jaxformer.layers.axes import constrain, param
from jaxformer.layers.linear import project
from jaxformer.layers.masks import check_mask, combine, window_mask
from jaxformer.layers.norms import offset_scale, rms_normalize
from jaxformer.layers.positions import apply_rotary
from jaxformer.layers.rope import Rope, apply_rope, layer_frequencies, rotate

MASKED_LOGIT = -1e30
IMPLEMENTATIONS = allowed_values(AttentionImpl)


def softcap(logits: jax.Array, cap: float | None) -> jax.Array:
    """Soft-capping (Gemma 2): cap * tanh(logits / cap), smooth and bounded by +-cap; None: unchanged."""
    if cap is None:
        return logits
    return jnp.tanh(logits / cap) * cap


def reference_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    logit_softcap: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Plain einsum attention: softmax(softcap(scale * Q K^T) + bias, masked) V, softmax in float32.

    query [B, T, N, H], key/value [B, S, K, H] with K dividing N (grouped-query),
    bias [B|1, N|1, T, S], mask bool [B|1, N|1, T, S] (True = attend).
    Returns (output [B, T, N, H], probabilities [B, N, T, S]).
    """
    batch, q_len, num_heads, head_dim = query.shape
    kv_heads = key.shape[2]
    check_heads(num_heads, kv_heads)
    groups = num_heads // kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    q = query.reshape(batch, q_len, kv_heads, groups, head_dim)  # [B, T, K, G, H]
    logits = jnp.einsum("btkgh,bskh->bkgts", q, key, preferred_element_type=jnp.float32) * scale
    logits = softcap(logits.reshape(batch, num_heads, q_len, key.shape[1]), logit_softcap)  # [B, N, T, S]
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0 and dropout_rng is not None:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    p = probs.astype(value.dtype).reshape(batch, kv_heads, groups, q_len, key.shape[1])
    out = jnp.einsum("bkgts,bskh->btkgh", p, value).reshape(batch, q_len, num_heads, head_dim)
    return out, probs


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
    implementation: str = "xla",
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    logit_softcap: float | None = None,
) -> jax.Array:
    """Attention with a choice of kernel; shapes as in `reference_attention`. Returns [B, T, N, H].

    'xla' and 'cudnn' call `jax.nn.dot_product_attention` (cuDNN flash attention on
    GPU). Attention dropout and logit soft-capping are only available in the reference
    kernel, so it is used whenever either is active.
    """
    check_choice("attention_impl", implementation, AttentionImpl)
    check_heads(query.shape[2], key.shape[2])
    if mask is not None:
        check_mask(mask, query.shape[0], query.shape[2], query.shape[1], key.shape[1])
    if bias is not None:
        check_mask(bias, query.shape[0], query.shape[2], query.shape[1], key.shape[1], name="bias")
    if implementation == "reference" or logit_softcap is not None or (dropout_rate > 0.0 and dropout_rng is not None):
        out, _ = reference_attention(query, key, value, bias, mask, scale, dropout_rate, dropout_rng, logit_softcap)
        return out
    if bias is not None:
        bias = bias.astype(query.dtype)
    kernel: Literal["xla", "cudnn"] = "cudnn" if implementation == "cudnn" else "xla"
    return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale, implementation=kernel)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query and key/value inputs.

    Self-attention: call with `kv_inputs=None`. Cross-attention: `kv_inputs` are the
    encoder outputs. `num_kv_heads < num_heads` gives grouped-query attention
    (1 = multi-query).

    KV cache (`decode=True`): a first call while the "cache" collection is being
    initialised only creates zero buffers sized by the input length S_max. Later
    calls append the new keys/values at `cache_index` and attend causally over the
    filled slots; `kv_valid` [B, T] marks new tokens that are real (False for left
    padding of prompts). For cross-attention the projected encoder keys/values are
    stored on the call that passes `kv_inputs` and reused when it is None.
    """

    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None
    use_bias: bool = True
    scale_logits: bool = True
    rotary: bool = False
    rotary_base: float = 10000.0
    dropout_rate: float = 0.0
    implementation: str = "xla"
    is_cross_attention: bool = False
    init_stddev: float = 0.02
    rope: Rope | None = None  # RoPE scaling / partial rotary; None: plain rotary at rotary_base
    qkv_bias: bool = False  # biases on query/key/value even when use_bias=False (Qwen2)
    qk_norm: bool = False  # RMSNorm over H of each query and key head before RoPE (Qwen3)
    norm_eps: float = 1e-6
    query_scale: float | None = None  # logits scale instead of head_dim**-0.5 (Gemma's query_pre_attn_scalar**-0.5)
    logit_softcap: float | None = None  # logits -> c * tanh(logits / c) before the mask (Gemma 2)
    local_rope: Rope | None = None  # RoPE of the sliding-window layers (window > 0); None: `rope` everywhere
    norm_scale_offset: float = 0.0  # qk_norm multiplies by (offset + w) (Gemma 3: 1.0)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _project(self, x: jax.Array, *heads: tuple[str, int, str]) -> list[jax.Array]:
        """x [B, T, D] -> one [B, T, n, H] per (name, n heads, logical axis) in `heads`.

        Projections of the same input run as one matmul over their concatenated kernels (the
        parameters stay separate): one [D, 3 N H] product for self-attention's queries, keys
        and values instead of three narrow ones, which also gives XLA one weight read per
        decoding step instead of three.
        """
        d_model = x.shape[-1]
        init = nn.initializers.normal(self.init_stddev)
        kernels, biases = [], []
        for name, count, axis in heads:
            shape, axes = (d_model, count, self.head_dim), ("embed", axis, "kv")
            kernels.append(param(self, f"{name}_kernel", init, shape, axes, self.param_dtype).astype(self.dtype))
            if self.use_bias or self.qkv_bias:
                bias = param(self, f"{name}_bias", nn.initializers.zeros, shape[1:], axes[1:], self.param_dtype)
                biases.append(bias.astype(self.dtype))
        y = project(x, jnp.concatenate(kernels, axis=1))  # [B, T, sum n, H] from kernels [D, sum n, H]
        if biases:
            y = y + jnp.concatenate(biases, axis=0)
        splits = list(itertools.accumulate(count for _, count, _ in heads))[:-1]
        return jnp.split(y, splits, axis=2)

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        kv_inputs: jax.Array | None = None,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        positions: jax.Array | None = None,
        kv_positions: jax.Array | None = None,
        kv_valid: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        window: jax.Array | int | None = None,
    ) -> jax.Array:
        """inputs [B, T, D], kv_inputs [B, S, D] or None -> [B, T, D].

        mask bool [B|1, 1|N, T, S]; bias [B|1, N|1, T, S] (e.g. relative positions);
        positions [B, T] / kv_positions [B, S] for rotary embeddings; window: sliding-window
        size (a scalar, possibly traced; 0 or None = global), counted in sequence/cache slots.
        """
        kv_heads = self.num_kv_heads or self.num_heads  # checked by ModelConfig (or by the kernel's check_heads)
        inputs = inputs.astype(self.dtype)
        d_model = inputs.shape[-1]
        batch, q_len = inputs.shape[:2]
        query_head = ("query", self.num_heads, "heads")
        kv_heads_spec = (("key", kv_heads, "kv_heads"), ("value", kv_heads, "kv_heads"))

        reuse_cross = self.is_cross_attention and decode and kv_inputs is None
        if kv_inputs is None and not reuse_cross:  # self-attention: queries, keys and values in one matmul
            query, key, value = self._project(inputs, query_head, *kv_heads_spec)  # [B, T, N|K, H]
        else:
            (query,) = self._project(inputs, query_head)
        query = self._head_norm("query_norm", query)
        if reuse_cross:
            # Reuse the encoder keys/values cached at the first decoding call.
            key = from_cache_layout(self.variable("cache", "cross_key", jnp.zeros, (1,)).value)
            value = from_cache_layout(self.variable("cache", "cross_value", jnp.zeros, (1,)).value)
        else:
            if kv_inputs is not None:
                key, value = self._project(kv_inputs.astype(self.dtype), *kv_heads_spec)  # [B, S, K, H]
            key = self._head_norm("key_norm", key)
            if self.rotary:
                if positions is None:
                    positions = jnp.broadcast_to(jnp.arange(q_len), (batch, q_len))
                if kv_positions is None:
                    kv_positions = (
                        positions if kv_inputs is None else jnp.broadcast_to(jnp.arange(key.shape[1]), key.shape[:2])
                    )
                key = self._rotate(key, kv_positions, window)
            if self.is_cross_attention and decode:
                for name, array in (("cross_key", key), ("cross_value", value)):
                    stored = to_cache_layout(array)
                    self.variable("cache", name, jnp.zeros, stored.shape, stored.dtype).value = stored
        if self.rotary:
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(q_len), (batch, q_len))
            query = self._rotate(query, positions, window)

        query = constrain(query, ("activation_batch", "activation_length", "activation_heads", "activation_kv"))
        scale = self.query_scale if self.query_scale is not None else (None if self.scale_logits else 1.0)
        one_step = q_len == 1 and not self.is_mutable_collection("intermediates")
        if decode and not self.is_cross_attention and one_step and self.has_variable("cache", "cached_key"):
            out = self._attend_one_step(query, key, value, kv_valid, bias, scale, window)
            return self._output(out, d_model)
        if decode and not self.is_cross_attention:
            key, value, mask = self._update_cache(key, value, kv_valid, mask, window)
        elif window is not None and not self.is_cross_attention:
            mask = combine(mask, window_mask(jnp.arange(q_len), jnp.arange(key.shape[1]), window))

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        if self.is_mutable_collection("intermediates"):
            out, probs = reference_attention(
                query, key, value, bias, mask, scale, self.dropout_rate, dropout_rng, self.logit_softcap
            )
            self.sow("intermediates", "attention_weights", probs)
        else:
            out = dot_product_attention(
                query,
                key,
                value,
                bias,
                mask,
                scale,
                self.implementation,
                self.dropout_rate,
                dropout_rng,
                self.logit_softcap,
            )
        return self._output(out, d_model)

    def _rotate(self, x: jax.Array, positions: jax.Array, window: jax.Array | int | None = None) -> jax.Array:
        """Rotary embedding of x [B, T, N|K, H] at positions [B, T] (scaled/partial when `rope` is set).

        With `local_rope`, layers whose window is > 0 (sliding, possibly traced) rotate by its rule instead.
        """
        if self.rope is None:
            return apply_rotary(x, positions, self.rotary_base)
        if self.local_rope is None or window is None:
            return apply_rope(x, positions, self.rope)
        inv_freq, scale = layer_frequencies(positions, self.rope, self.local_rope, jnp.asarray(window) > 0)
        return rotate(x, positions, inv_freq, scale, self.rope.rotary_dim)

    def _head_norm(self, name: str, x: jax.Array) -> jax.Array:
        """qk_norm: RMSNorm of x [B, T, N|K, H] over H with one learned scale [H] shared by the heads."""
        if not self.qk_norm:
            return x
        init = nn.initializers.constant(1.0 - self.norm_scale_offset)
        scale = param(self, f"{name}_scale", init, (self.head_dim,), ("kv",), self.param_dtype)
        return (rms_normalize(x, self.norm_eps) * offset_scale(scale, self.norm_scale_offset)).astype(self.dtype)

    def _output(self, out: jax.Array, d_model: int) -> jax.Array:
        """Heads [B, T, N, H] -> [B, T, D] through the output projection."""
        init = nn.initializers.normal(self.init_stddev)
        kernel = param(
            self,
            "out_kernel",
            init,
            (self.num_heads, self.head_dim, d_model),
            ("heads", "kv", "embed"),
            self.param_dtype,
        )
        # As one [N*H, D] matrix: with separate n, h axes XLA:CPU re-laid out the kernel at every decoding step.
        merged = out.astype(self.dtype).reshape(*out.shape[:2], -1)  # [B, T, N*H]
        y = project(merged, kernel.astype(self.dtype).reshape(-1, d_model))  # [B, T, D]
        if self.use_bias:
            y = y + param(self, "out_bias", nn.initializers.zeros, (d_model,), ("embed",), self.param_dtype).astype(
                self.dtype
            )
        return y

    def _cache_variables(self, key: jax.Array, value: jax.Array) -> tuple[Any, Any, Any, Any]:
        """The self-attention cache: keys and values [B, K, H, S_max] (see `to_cache_layout`), validity, index."""
        batch, max_len, kv_heads, head_dim = key.shape
        shape = (batch, kv_heads, head_dim, max_len)
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        cached_valid = self.variable("cache", "cached_valid", jnp.zeros, (batch, max_len), jnp.bool_)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        return cached_key, cached_value, cached_valid, cache_index

    @staticmethod
    def _write_cache(
        variables: tuple[Any, Any, Any, Any], key: jax.Array, value: jax.Array, kv_valid: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Append keys/values [B, T, K, H] at the cache index; returns (index before, valid [B, S_max], causal [T, S_max])."""
        cached_key, cached_value, cached_valid, cache_index = variables
        batch, new_len = key.shape[:2]
        index = cache_index.value
        if kv_valid is None:
            kv_valid = jnp.ones((batch, new_len), jnp.bool_)
        start = (0, 0, 0, index)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, to_cache_layout(key, cached_key.value), start)
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, to_cache_layout(value, cached_value.value), start
        )
        cached_valid.value = jax.lax.dynamic_update_slice(cached_valid.value, kv_valid.astype(jnp.bool_), (0, index))
        cache_index.value = index + new_len
        query_slots = index + jnp.arange(new_len)  # [T]
        key_slots = jnp.arange(cached_valid.value.shape[1])  # [S_max]
        return index, cached_valid.value, key_slots[None, :] <= query_slots[:, None]

    def _update_cache(
        self,
        key: jax.Array,
        value: jax.Array,
        kv_valid: jax.Array | None,
        mask: jax.Array | None,
        window: jax.Array | int | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Write new keys/values [B, T, K, H] into the cache; return the full cache [B, S_max, K, H] and its mask."""
        initialised = self.has_variable("cache", "cached_key")
        variables = self._cache_variables(key, value)
        if not initialised:
            return key, value, mask  # shape-only initialisation pass
        index, valid, causal = self._write_cache(variables, key, value, kv_valid)
        cached_key, cached_value = variables[:2]
        cache_mask = causal[None, None] & valid[:, None, None, :]  # [B, 1, T, S_max]
        if window is not None:
            slots = jnp.arange(valid.shape[1])
            cache_mask = cache_mask & window_mask(index + jnp.arange(key.shape[1]), slots, window)
        return from_cache_layout(cached_key.value), from_cache_layout(cached_value.value), cache_mask

    def _attend_one_step(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        kv_valid: jax.Array | None,
        bias: jax.Array | None,
        scale: float | None,
        window: jax.Array | int | None = None,
    ) -> jax.Array:
        """One new token (query/key/value [B, 1, ., H]) over the cache; returns [B, 1, N, H].

        The same numbers as writing the new key/value into the cache and attending over it
        (`_update_cache` + `reference_attention`), but the matmuls read the cache as it was
        before this step and the new slot's score and value enter separately. Reading the
        updated cache made XLA:CPU copy every layer's cache at every step (its in-place
        update was duplicated into the attention's fusion).
        """
        variables = self._cache_variables(key, value)
        old_key, old_value = variables[0].value, variables[1].value  # [B, K, H, S_max], slot `index` still empty
        index, valid, causal = self._write_cache(variables, key, value, kv_valid)  # the matmuls below read old_*
        batch, _, num_heads, head_dim = query.shape
        kv_heads, max_len = old_key.shape[1], old_key.shape[3]
        groups = num_heads // kv_heads
        scale = head_dim**-0.5 if scale is None else scale
        is_new = jnp.arange(max_len) == index  # [S_max]
        mask = causal[0] & valid  # [B, S_max]
        if window is not None:
            mask = mask & window_mask(index[None], jnp.arange(max_len), window)[0, 0]  # [1, S_max]
        q = query.reshape(batch, kv_heads, groups, head_dim)  # [B, K, G, H] (T = 1)
        old_logits = jnp.einsum("bkgh,bkhs->bkgs", q, old_key, preferred_element_type=jnp.float32)
        new_logit = jnp.einsum("bkgh,bkh->bkg", q, key[:, 0], preferred_element_type=jnp.float32)
        logits = jnp.where(is_new, new_logit[..., None], old_logits).reshape(batch, num_heads, max_len) * scale
        logits = softcap(logits, self.logit_softcap)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)[:, :, 0, :]  # [B|1, N|1, S_max]
        probs = jax.nn.softmax(jnp.where(mask[:, None, :], logits, MASKED_LOGIT), axis=-1)  # [B, N, S_max]
        probs = probs.reshape(batch, kv_heads, groups, max_len)
        old_probs = jnp.where(is_new, 0.0, probs).astype(old_value.dtype)
        new_prob = jnp.sum(jnp.where(is_new, probs, 0.0), axis=-1)  # [B, K, G]
        out = jnp.einsum("bkgs,bkhs->bkgh", old_probs, old_value)
        out = out + new_prob[..., None].astype(out.dtype) * value[:, 0, :, None, :].astype(out.dtype)
        return out.reshape(batch, 1, num_heads, head_dim)


def to_cache_layout(array: jax.Array, like: jax.Array | None = None) -> jax.Array:
    """Keys or values [B, S, K, H] -> the cache's [B, K, H, S] (cast to `like`'s dtype when given).

    The layout the attention matmuls read without a copy on XLA:CPU: batch axes first, then
    the head size, the slots last. Stored as [B, S, K, H], both caches were transposed at
    every decoding step.
    """
    stored = jnp.einsum("bskh->bkhs", array)
    return stored if like is None else stored.astype(like.dtype)


def from_cache_layout(stored: jax.Array) -> jax.Array:
    """The cache's [B, K, H, S] -> [B, S, K, H] (a transpose XLA folds into the matmuls that read it)."""
    return jnp.einsum("bkhs->bskh", stored)
