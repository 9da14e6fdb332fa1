"""Normalization layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.errors import ConfigError
from jaxformer.layers.axes import param


class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale (+ bias), over the last axis D. x: [..., D]."""

    eps: float = 1e-5
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * param(self, "scale", nn.initializers.ones, (d,), ("embed",), self.param_dtype)
        if self.use_bias:
            y = y + param(self, "bias", nn.initializers.zeros, (d,), ("embed",), self.param_dtype)
        return y.astype(self.dtype)


def rms_normalize(x: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) over the last axis, in float32. x: [..., D] -> float32 [..., D]."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + eps)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * (offset + scale), over the last axis D (T5's layer norm). x: [..., D].

    `scale_offset` 1.0 is Gemma's (1 + w) form: the stored w starts at 0, so y starts as the plain
    normalised x either way. The product is taken in float32.
    """

    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scale_offset: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        y = rms_normalize(x, self.eps)
        init = nn.initializers.constant(1.0 - self.scale_offset)
        scale = param(self, "scale", init, (d,), ("embed",), self.param_dtype)
        y = y * offset_scale(scale, self.scale_offset)
        return y.astype(self.dtype)


def offset_scale(scale: jax.Array, offset: float) -> jax.Array:
    """The factor an RMSNorm multiplies by: offset + scale, in float32 (scale as stored in the params)."""
    scale32 = scale.astype(jnp.float32)
    return scale32 + offset if offset else scale32


def make_norm(
    kind: str,
    eps: float,
    use_bias: bool,
    dtype: Any,
    param_dtype: Any,
    name: str | None = None,
    scale_offset: float = 0.0,
) -> nn.Module:
    """Build the norm named by `kind` ('layernorm' or 'rmsnorm'; `scale_offset` is RMSNorm's (offset + w))."""
    if kind == "layernorm":
        return LayerNorm(eps=eps, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name)
    if kind == "rmsnorm":
        return RMSNorm(eps=eps, dtype=dtype, param_dtype=param_dtype, scale_offset=scale_offset, name=name)
    raise ConfigError(f"norm={kind!r} is not allowed; choose one of ['layernorm', 'rmsnorm'].")
