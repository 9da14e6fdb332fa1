"""RoPE frequency rules of today's decoder LLMs and partial rotary embeddings.

The rules follow `transformers.modeling_rope_utils` (names as in its `rope_parameters`):
    none     inv_freq_i = base^(-2i/R)                                   (Su et al. 2021)
    linear   inv_freq / factor                                           (position interpolation)
    dynamic  base' = base * (factor * L / L0 - (factor - 1))^(R / (R - 2)), L = max(seq, L0)  (NTK-aware)
    llama3   low frequencies / factor, high ones kept, a smooth ramp between (Llama 3.1)
    yarn     extrapolation/interpolation blend by a linear ramp; cos and sin scaled by
             0.1 ln(factor) + 1 (Peng et al. 2023)
R is the rotated size `rotary_dim` (partial rotary: the first R of the H dims rotate).

Legend: B batch, T length, N heads, H head size, R rotated dims.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Rope:
    """One layer's rotary embedding: the frequency rule and its parameters (hashable module attribute)."""

    rotary_dim: int
    base: float = 10000.0
    scaling: str = "none"
    factor: float = 1.0
    original_max_len: int = 2048
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True

    @classmethod
    def local_from_config(cls, config: Any) -> Rope | None:
        """The plain rule of the sliding-window layers at `rope_local_base` (Gemma 3); None when unset."""
        if getattr(config, "rope_local_base", None) is None:
            return None
        return cls(rotary_dim=config.rotary_dim, base=config.rope_local_base)

    @classmethod
    def from_config(cls, config: Any) -> Rope:
        """The rule a ModelConfig asks for."""
        return cls(
            rotary_dim=config.rotary_dim,
            base=config.rotary_base,
            scaling=config.rope_scaling,
            factor=config.rope_factor,
            original_max_len=config.rope_original_max_len or config.max_len,
            low_freq_factor=config.rope_low_freq_factor,
            high_freq_factor=config.rope_high_freq_factor,
            beta_fast=config.rope_beta_fast,
            beta_slow=config.rope_beta_slow,
            attention_factor=config.rope_attention_factor,
            truncate=config.rope_truncate,
        )

    def inv_freq(self) -> tuple[np.ndarray, float]:
        """(inverse frequencies [R/2] float32, cos/sin scale) of the static rules (all but 'dynamic')."""
        dim = self.rotary_dim
        exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
        inv = (1.0 / (self.base**exponents)).astype(np.float32)
        if self.scaling in ("none", "dynamic"):
            return inv, 1.0
        if self.scaling == "linear":
            return (inv / self.factor).astype(np.float32), 1.0
        if self.scaling == "llama3":
            return llama3_inv_freq(inv, self.factor, self.low_freq_factor, self.high_freq_factor, self.original_max_len)
        if self.scaling == "yarn":
            return self._yarn()
        raise ConfigError(f"rope_scaling={self.scaling!r} is not allowed; choose none, linear, dynamic, llama3, yarn.")

    def _yarn(self) -> tuple[np.ndarray, float]:
        dim, base, factor = self.rotary_dim, self.base, self.factor
        scale = self.attention_factor
        if scale is None:
            scale = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0

        def correction_dim(rotations: float) -> float:
            return (dim * math.log(self.original_max_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # as transformers: avoid a zero-width ramp
        pos_freqs = (base ** (np.arange(0, dim, 2).astype(np.float32) / dim)).astype(np.float32)
        extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
        keep = 1 - ramp  # 1: extrapolate (high frequency), 0: interpolate
        return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32), float(scale)

    def frequencies(self, positions: jax.Array) -> tuple[jax.Array, float]:
        """(inverse frequencies [R/2], cos/sin scale); "dynamic" grows the base with the batch's longest position."""
        inv, scale = self.inv_freq()
        if self.scaling != "dynamic":
            return jnp.asarray(inv), scale
        dim = self.rotary_dim
        seq = jnp.maximum(jnp.max(positions) + 1, self.original_max_len).astype(jnp.float32)
        base = self.base * ((self.factor * seq / self.original_max_len) - (self.factor - 1)) ** (dim / (dim - 2))
        exponents = jnp.arange(0, dim, 2).astype(jnp.float32) / dim
        return 1.0 / (base**exponents), scale


def llama3_inv_freq(
    inv: np.ndarray, factor: float, low_freq_factor: float, high_freq_factor: float, original_max_len: int
) -> tuple[np.ndarray, float]:
    """Llama 3.1 rule: wavelengths beyond L0/low_freq_factor slow by `factor`, below L0/high_freq_factor kept."""
    low_wavelen, high_wavelen = original_max_len / low_freq_factor, original_max_len / high_freq_factor
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, out).astype(np.float32), 1.0


def apply_rope(x: jax.Array, positions: jax.Array, rope: Rope) -> jax.Array:
    """Rotate the first R dims of x [B, T, N, H] ("rotate-half" layout) by positions [B, T]; the rest pass."""
    inv_freq, scale = rope.frequencies(positions)
    return rotate(x, positions, inv_freq, scale, rope.rotary_dim)


def layer_frequencies(
    positions: jax.Array, rope: Rope, local_rope: Rope | None, is_local: jax.Array | bool
) -> tuple[jax.Array, jax.Array | float]:
    """(inverse frequencies [R/2], cos/sin scale) of one layer: `local_rope`'s where `is_local`, else `rope`'s.

    `is_local` may be traced (a per-layer flag scanned as data, e.g. window > 0), so one compiled
    layer serves both kinds (Gemma 3: local layers at base 10k, global ones at 1M).
    """
    inv, scale = rope.frequencies(positions)
    if local_rope is None:
        return inv, scale
    local_inv, local_scale = local_rope.frequencies(positions)
    flag = jnp.asarray(is_local)
    return jnp.where(flag, local_inv, inv), jnp.where(flag, local_scale, scale)


def rotate(x: jax.Array, positions: jax.Array, inv_freq: jax.Array, scale: jax.Array | float, dim: int) -> jax.Array:
    """x [B, T, N, H]: its first `dim` dims rotated by positions [B, T] at inv_freq [dim/2], cos/sin times scale."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, R/2]
    cos = (jnp.cos(angles) * scale)[:, :, None, :]  # [B, T, 1, R/2]
    sin = (jnp.sin(angles) * scale)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    rot, rest = x32[..., :dim], x32[..., dim:]
    x1, x2 = rot[..., : dim // 2], rot[..., dim // 2 :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
    return out.astype(x.dtype)
