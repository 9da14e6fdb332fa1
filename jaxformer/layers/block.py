"""One Transformer block for encoders and decoders.

    self-attention (causal or not) -> [cross-attention] -> feed-forward,
each sub-layer wrapped in a residual connection with a norm placed before
("pre", GPT-2/T5) or after ("post", the 2017 paper/BERT) it.

Legend: B batch, T target length, S source length, D model width.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxformer.config import ModelConfig
from jaxformer.layers.attention import MultiHeadAttention
from jaxformer.layers.axes import BTD, constrain
from jaxformer.layers.feedforward import FeedForward
from jaxformer.layers.norms import make_norm
from jaxformer.layers.positions import RelativePositionBias
from jaxformer.layers.rope import Rope


class TransformerBlock(nn.Module):
    """x [B, T, D] -> [B, T, D]. With `has_cross_attention`, attends to `encoded` [B, S, D]."""

    config: ModelConfig
    has_cross_attention: bool = False
    deterministic: bool = True  # no dropout
    decode: bool = False  # autoregressive decoding with a KV cache
    scan_output: bool = False  # return (x, None), the carry/output pair `nn.scan` expects

    def _norm(self, name: str) -> nn.Module:
        cfg = self.config
        return make_norm(
            cfg.norm,
            cfg.norm_eps,
            cfg.use_bias,
            cfg.jnp_dtype,
            cfg.jnp_param_dtype,
            name=name,
            scale_offset=cfg.norm_scale_offset,
        )

    def _sublayer(self, x: jax.Array, name: str, fn: Any) -> jax.Array:
        """Pre-norm: x + fn(norm(x)) (sandwich: x + post_norm(fn(norm(x))), Gemma 2/3); post-norm: norm(x + fn(x))."""
        cfg = self.config
        norm = self._norm(f"{name}_norm")
        drop = nn.Dropout(cfg.dropout_rate)
        if cfg.norm_position == "pre":
            y = fn(norm(x))
            if cfg.sandwich_norms:
                y = self._norm(f"{name}_post_norm")(y)
            return x + drop(y, deterministic=self.deterministic)
        return norm(x + drop(fn(x), deterministic=self.deterministic))

    def _attention(self, name: str, cross: bool) -> MultiHeadAttention:
        cfg = self.config
        return MultiHeadAttention(
            num_heads=cfg.num_heads,
            head_dim=cfg.dim_per_head,
            num_kv_heads=cfg.kv_heads,
            use_bias=cfg.use_bias,
            scale_logits=cfg.scale_attention_logits,
            rotary=cfg.position == "rotary" and not cross,
            rotary_base=cfg.rotary_base,
            rope=Rope.from_config(cfg) if cfg.position == "rotary" and not cross else None,
            qkv_bias=cfg.qkv_bias and not cross,
            qk_norm=cfg.qk_norm,
            norm_eps=cfg.norm_eps,
            query_scale=None if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar**-0.5,
            logit_softcap=cfg.attn_logit_softcap,
            local_rope=Rope.local_from_config(cfg) if cfg.position == "rotary" and not cross else None,
            norm_scale_offset=cfg.norm_scale_offset,
            dropout_rate=cfg.attention_dropout_rate,
            implementation=cfg.attention_impl,
            is_cross_attention=cross,
            init_stddev=cfg.initializer_range,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        positions: jax.Array | None = None,
        encoded: jax.Array | None = None,
        cross_mask: jax.Array | None = None,
        cross_bias: jax.Array | None = None,
        kv_valid: jax.Array | None = None,
        relative_buckets: jax.Array | None = None,
        window: jax.Array | None = None,
    ) -> Any:
        """mask/bias [B|1, 1|N, T, T]; positions [B, T] (rotary); encoded [B, S, D];
        cross_mask/cross_bias [B|1, 1|N, T, S]; kv_valid [B, T] (decoding only);
        relative_buckets [B, T, T]: bucket ids for this layer's own relative bias table (umT5), replacing `bias`;
        window: this layer's sliding window (scalar int32, 0 = global; scanned data)."""
        cfg = self.config
        if relative_buckets is not None:
            bias = RelativePositionBias(
                num_heads=cfg.num_heads,
                num_buckets=cfg.relative_buckets,
                max_distance=cfg.relative_max_distance,
                dtype=cfg.jnp_dtype,
                param_dtype=cfg.jnp_param_dtype,
                name="relative_position_bias",
            ).from_buckets(relative_buckets)
        deterministic, decode = self.deterministic, self.decode
        self_attention = self._attention("self_attention", cross=False)
        x = self._sublayer(
            x,
            "self_attention",
            lambda h: self_attention(
                h,
                mask=mask,
                bias=bias,
                positions=positions,
                kv_valid=kv_valid,
                deterministic=deterministic,
                decode=decode,
                window=window,
            ),
        )
        if self.has_cross_attention:
            cross_attention = self._attention("cross_attention", cross=True)
            x = self._sublayer(
                x,
                "cross_attention",
                lambda h: cross_attention(
                    h, kv_inputs=encoded, mask=cross_mask, bias=cross_bias, deterministic=deterministic, decode=decode
                ),
            )
        ffn = FeedForward(
            d_model=cfg.d_model,
            d_ff=cfg.d_ff,
            activation=cfg.activation,
            use_bias=cfg.use_bias,
            dropout_rate=cfg.dropout_rate,
            init_stddev=cfg.initializer_range,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            name="mlp",
        )
        x = self._sublayer(x, "mlp", lambda h: ffn(h, deterministic=deterministic))
        x = constrain(x, BTD)
        return (x, None) if self.scan_output else x
