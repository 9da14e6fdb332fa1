"""What every model family checks and builds from its inputs: shape checks and attention masks.

Legend: B batch, T length.
"""

from __future__ import annotations

import jax

from jaxformer.config import ModelConfig
from jaxformer.errors import InputError
from jaxformer.layers import masks
from jaxformer.models.embeddings import check_length


def attention_mask(valid: jax.Array | None, segment_ids: jax.Array | None, length: int) -> jax.Array | None:
    """[B, 1, T, T] bidirectional mask from key validity [B, T] and packing segment ids [B, T]."""
    key_mask = None if valid is None else masks.key_padding_mask(valid.astype(bool), length)
    seg_mask = None if segment_ids is None else masks.segment_mask(segment_ids, segment_ids)
    return masks.combine(key_mask, seg_mask)


def check_tokens(config: ModelConfig, tokens: jax.Array, name: str = "tokens") -> None:
    if tokens.ndim != 2:
        raise InputError(f"{name} must be [B, T] integer ids, got shape {tuple(tokens.shape)}")
    check_length(config, tokens.shape[1], name)


def check_same_shape(tokens: jax.Array, **arrays: jax.Array | None) -> None:
    """Every given per-token array (mask, positions, segment ids) has the tokens' shape [B, T]; None is skipped."""
    for name, array in arrays.items():
        if array is not None and tuple(array.shape) != tuple(tokens.shape):
            raise InputError(
                f"{name} has shape {tuple(array.shape)} but tokens are {tuple(tokens.shape)}; they must match."
            )


def causal_attention_mask(valid: jax.Array | None, segment_ids: jax.Array | None, length: int) -> jax.Array:
    """[B|1, 1, T, T]: causal AND key padding AND same packed segment."""
    return masks.combine(masks.causal_mask(length), attention_mask(valid, segment_ids, length))  # type: ignore[return-value]
