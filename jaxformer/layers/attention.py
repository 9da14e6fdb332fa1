"""Scaled dot-product attention and multi-head attention (self/cross, GQA/MQA, KV cache).

Legend (used in every einsum here):
    B batch   T query length   S key length   D model width
    N query heads   K key/value heads   G = N // K query heads per kv head   H head size
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.layers.axes import constrain, param
from jaxformer.layers.masks import check_mask
from jaxformer.layers.positions import apply_rotary

MASKED_LOGIT = -1e30
IMPLEMENTATIONS = ("reference", "xla", "cudnn")


def check_heads(num_heads: int, num_kv_heads: int) -> None:
    """Raise ValueError unless the key/value heads K divide the query heads N (grouped-query attention)."""
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(
            f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}; "
            "num_kv_heads must divide num_heads (1 = multi-query, num_heads = multi-head)."
        )


def reference_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Plain einsum attention: softmax(scale * Q K^T + bias, masked) V, softmax in float32.

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
    logits = logits.reshape(batch, num_heads, q_len, key.shape[1])  # [B, N, T, S]
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
) -> jax.Array:
    """Attention with a choice of kernel; shapes as in `reference_attention`. Returns [B, T, N, H].

    'xla' and 'cudnn' call `jax.nn.dot_product_attention` (cuDNN flash attention on
    GPU). Attention dropout is only available in the reference kernel, so it is
    used whenever dropout is active.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention_impl={implementation!r} is not allowed; choose one of {list(IMPLEMENTATIONS)}.")
    check_heads(query.shape[2], key.shape[2])
    if mask is not None:
        check_mask(mask, query.shape[0], query.shape[2], query.shape[1], key.shape[1])
    if bias is not None:
        check_mask(bias, query.shape[0], query.shape[2], query.shape[1], key.shape[1], name="bias")
    if implementation == "reference" or (dropout_rate > 0.0 and dropout_rng is not None):
        out, _ = reference_attention(query, key, value, bias, mask, scale, dropout_rate, dropout_rng)
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
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _project(self, x: jax.Array, name: str, heads: int, axis: str) -> jax.Array:
        """x [B, T, D] -> [B, T, heads, H]."""
        d_model = x.shape[-1]
        init = nn.initializers.normal(self.init_stddev)
        kernel = param(
            self, f"{name}_kernel", init, (d_model, heads, self.head_dim), ("embed", axis, "kv"), self.param_dtype
        )
        y = jnp.einsum("btd,dnh->btnh", x, kernel.astype(self.dtype))
        if self.use_bias:
            bias = param(
                self, f"{name}_bias", nn.initializers.zeros, (heads, self.head_dim), (axis, "kv"), self.param_dtype
            )
            y = y + bias.astype(self.dtype)
        return y

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
    ) -> jax.Array:
        """inputs [B, T, D], kv_inputs [B, S, D] or None -> [B, T, D].

        mask bool [B|1, 1|N, T, S]; bias [B|1, N|1, T, S] (e.g. relative positions);
        positions [B, T] / kv_positions [B, S] for rotary embeddings.
        """
        kv_heads = self.num_kv_heads or self.num_heads
        check_heads(self.num_heads, kv_heads)
        inputs = inputs.astype(self.dtype)
        d_model = inputs.shape[-1]
        query = self._project(inputs, "query", self.num_heads, "heads")  # [B, T, N, H]
        batch, q_len = inputs.shape[:2]

        if self.is_cross_attention and decode and kv_inputs is None:
            # Reuse the encoder keys/values cached at the first decoding call.
            key = self.variable("cache", "cross_key", jnp.zeros, (1,)).value
            value = self.variable("cache", "cross_value", jnp.zeros, (1,)).value
        else:
            source = inputs if kv_inputs is None else kv_inputs.astype(self.dtype)
            key = self._project(source, "key", kv_heads, "kv_heads")  # [B, S, K, H]
            value = self._project(source, "value", kv_heads, "kv_heads")
            if self.rotary:
                if positions is None:
                    positions = jnp.broadcast_to(jnp.arange(q_len), (batch, q_len))
                if kv_positions is None:
                    kv_positions = (
                        positions if kv_inputs is None else jnp.broadcast_to(jnp.arange(key.shape[1]), key.shape[:2])
                    )
                key = apply_rotary(key, kv_positions, self.rotary_base)
            if self.is_cross_attention and decode:
                self.variable("cache", "cross_key", jnp.zeros, key.shape, key.dtype).value = key
                self.variable("cache", "cross_value", jnp.zeros, value.shape, value.dtype).value = value
        if self.rotary:
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(q_len), (batch, q_len))
            query = apply_rotary(query, positions, self.rotary_base)

        if decode and not self.is_cross_attention:
            key, value, mask = self._update_cache(key, value, kv_valid, mask)

        query = constrain(query, ("activation_batch", "activation_length", "activation_heads", "activation_kv"))
        scale = None if self.scale_logits else 1.0
        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        if self.is_mutable_collection("intermediates"):
            out, probs = reference_attention(query, key, value, bias, mask, scale, self.dropout_rate, dropout_rng)
            self.sow("intermediates", "attention_weights", probs)
        else:
            out = dot_product_attention(
                query, key, value, bias, mask, scale, self.implementation, self.dropout_rate, dropout_rng
            )
        init = nn.initializers.normal(self.init_stddev)
        kernel = param(
            self,
            "out_kernel",
            init,
            (self.num_heads, self.head_dim, d_model),
            ("heads", "kv", "embed"),
            self.param_dtype,
        )
        y = jnp.einsum("btnh,nhd->btd", out.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + param(self, "out_bias", nn.initializers.zeros, (d_model,), ("embed",), self.param_dtype).astype(
                self.dtype
            )
        return y

    def _update_cache(
        self, key: jax.Array, value: jax.Array, kv_valid: jax.Array | None, mask: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Write new keys/values [B, T, K, H] into the cache; return the full cache and its mask."""
        initialised = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cached_valid = self.variable("cache", "cached_valid", jnp.zeros, key.shape[:2], jnp.bool_)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialised:
            return key, value, mask  # shape-only initialisation pass
        batch, new_len = key.shape[:2]
        max_len = cached_key.value.shape[1]
        index = cache_index.value
        if kv_valid is None:
            kv_valid = jnp.ones((batch, new_len), jnp.bool_)
        cached_key.value = jax.lax.dynamic_update_slice(
            cached_key.value, key.astype(cached_key.value.dtype), (0, index, 0, 0)
        )
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, value.astype(cached_value.value.dtype), (0, index, 0, 0)
        )
        cached_valid.value = jax.lax.dynamic_update_slice(cached_valid.value, kv_valid.astype(jnp.bool_), (0, index))
        cache_index.value = index + new_len
        query_slots = index + jnp.arange(new_len)  # [T]
        key_slots = jnp.arange(max_len)  # [S_max]
        causal = key_slots[None, :] <= query_slots[:, None]  # [T, S_max]
        cache_mask = causal[None, None] & cached_valid.value[:, None, None, :]  # [B, 1, T, S_max]
        return cached_key.value, cached_value.value, cache_mask
