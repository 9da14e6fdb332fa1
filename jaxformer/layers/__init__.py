"""Building blocks of the Transformer, each usable on its own.

Einsum legend used across the package:
    B batch   T query/target length   S key/source length   D model width
    N query heads   K key/value heads   G query heads per kv head   H head size
    F feed-forward width   V vocabulary
"""

from jaxformer.layers.attention import MultiHeadAttention, dot_product_attention, reference_attention
from jaxformer.layers.block import TransformerBlock
from jaxformer.layers.embed import Embed
from jaxformer.layers.feedforward import FeedForward
from jaxformer.layers.masks import causal_mask, combine, key_padding_mask, padding_mask, segment_mask
from jaxformer.layers.norms import LayerNorm, RMSNorm
from jaxformer.layers.positions import (
    LearnedPositions,
    RelativePositionBias,
    SinusoidalPositions,
    apply_rotary,
    relative_buckets,
    relative_position_bucket,
    sinusoidal_table,
)

__all__ = [
    "Embed",
    "FeedForward",
    "LayerNorm",
    "LearnedPositions",
    "MultiHeadAttention",
    "RMSNorm",
    "RelativePositionBias",
    "SinusoidalPositions",
    "TransformerBlock",
    "apply_rotary",
    "causal_mask",
    "combine",
    "dot_product_attention",
    "key_padding_mask",
    "padding_mask",
    "reference_attention",
    "relative_buckets",
    "relative_position_bucket",
    "segment_mask",
    "sinusoidal_table",
]
