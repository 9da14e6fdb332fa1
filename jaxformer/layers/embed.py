"""Token embedding with an `attend` method for tied output projections.

Legend: B batch, T length, D model width, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.layers.axes import param


class Embed(nn.Module):
    """tokens [B, T] int -> [B, T, D]; `attend(x [B, T, D]) -> [B, T, V]` = x E^T."""

    vocab_size: int
    d_model: int
    init_stddev: float = 0.02
    table_axes: tuple[str, str] = ("vocab", "embed")
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = param(
            self,
            "embedding",
            nn.initializers.normal(self.init_stddev),
            (self.vocab_size, self.d_model),
            self.table_axes,
            self.param_dtype,
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"token ids must be integers, got dtype {tokens.dtype}")
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("btd,vd->btv", x.astype(self.dtype), self.embedding.astype(self.dtype))
