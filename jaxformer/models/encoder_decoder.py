"""Encoder-decoder model: the original Transformer (Vaswani et al. 2017) and T5 (Raffel et al. 2020).

Legend: B batch, S source length, T target length, D model width, V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxformer.config import ModelConfig
from jaxformer.errors import InputError
from jaxformer.layers import masks
from jaxformer.models.embeddings import DecodePositions, InputEmbedding, default_positions, token_embed
from jaxformer.models.heads import LMHead
from jaxformer.models.inputs import attention_mask, causal_attention_mask, check_same_shape, check_tokens
from jaxformer.models.stack import TransformerStack


def cross_attention_mask(
    target_tokens: jax.Array,
    source_valid: jax.Array | None,
    target_segment_ids: jax.Array | None,
    source_segment_ids: jax.Array | None,
) -> jax.Array | None:
    """[B, 1, T, S]: decoder queries see real source keys of the same packed segment."""
    target_len = target_tokens.shape[1]
    key_mask = None if source_valid is None else masks.key_padding_mask(source_valid.astype(bool), target_len)
    seg_mask = None
    if target_segment_ids is not None and source_segment_ids is not None:
        seg_mask = masks.segment_mask(target_segment_ids, source_segment_ids)
    return masks.combine(key_mask, seg_mask)


class EncoderDecoder(nn.Module):
    """Sequence-to-sequence Transformer.

    encode(source [B, S], source_valid, source_positions, source_segment_ids) -> [B, S, D]
    decode(target [B, T], encoded [B, S, D], source_valid, target_positions, ...) -> logits [B, T, V]
    __call__ does both. With `decode=True` (module attribute) `decode` appends to
    the KV cache; pass `encoded` on the first call only (its keys/values are cached).
    """

    config: ModelConfig
    deterministic: bool = True
    decode: bool = False

    def setup(self) -> None:
        cfg = self.config
        self.embed = token_embed(cfg)
        target_embed = self.embed
        if not cfg.share_embeddings:
            target_embed = token_embed(cfg, name="target_embed")
        self.source_embedding = InputEmbedding(cfg, self.embed, self.deterministic)
        self.target_embedding = InputEmbedding(cfg, target_embed, self.deterministic)
        self.encoder = TransformerStack(cfg, cfg.num_layers, causal=False, deterministic=self.deterministic)
        self.decoder = TransformerStack(
            cfg,
            cfg.decoder_layers,
            causal=True,
            has_cross_attention=True,
            deterministic=self.deterministic,
            decode=self.decode,
        )
        self.lm_head = LMHead(cfg, target_embed)
        if self.decode:
            self.decode_positions = DecodePositions()

    def encode(
        self,
        source: jax.Array,
        source_valid: jax.Array | None = None,
        source_positions: jax.Array | None = None,
        source_segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        check_tokens(self.config, source, "source")
        for name, arr in (
            ("source_valid", source_valid),
            ("source_positions", source_positions),
            ("source_segment_ids", source_segment_ids),
        ):
            check_same_shape(name, arr, source)
        positions = default_positions(source) if source_positions is None else source_positions
        x = self.source_embedding(source, positions)
        return self.encoder(x, attention_mask(source_valid, source_segment_ids, source.shape[1]), positions)

    def decode_step(
        self,
        target: jax.Array,
        encoded: jax.Array | None,
        source_valid: jax.Array | None = None,
        target_positions: jax.Array | None = None,
        target_segment_ids: jax.Array | None = None,
        source_segment_ids: jax.Array | None = None,
        target_valid: jax.Array | None = None,
    ) -> jax.Array:
        """Decoder pass. target [B, T]; encoded [B, S, D] (None while decoding after the first call)."""
        check_tokens(self.config, target, "target")
        for name, arr in (
            ("target_positions", target_positions),
            ("target_segment_ids", target_segment_ids),
            ("target_valid", target_valid),
        ):
            check_same_shape(name, arr, target)
        if (target_segment_ids is None) != (source_segment_ids is None):
            given = "source_segment_ids" if target_segment_ids is None else "target_segment_ids"
            raise InputError(
                f"{given} was given without its partner; packed sequence pairs need both source_segment_ids and "
                "target_segment_ids (or neither), else cross-attention would mix the packed pairs."
            )
        if encoded is not None:
            for name, arr in (("source_valid", source_valid), ("source_segment_ids", source_segment_ids)):
                if arr is not None and tuple(arr.shape) != tuple(encoded.shape[:2]):
                    raise InputError(
                        f"{name} has shape {tuple(arr.shape)} but encoded is {tuple(encoded.shape)}; "
                        "it must be [B, S] for the encoded source."
                    )
        if self.decode:
            positions = self.decode_positions(target, target_positions)
        else:
            positions = default_positions(target) if target_positions is None else target_positions
        x = self.target_embedding(target, positions)
        cross_mask = cross_attention_mask(target, source_valid, target_segment_ids, source_segment_ids)
        if self.decode:
            hidden = self.decoder(x, None, positions, encoded, cross_mask, kv_valid=target_valid)
        else:
            self_mask = causal_attention_mask(target_valid, target_segment_ids, target.shape[1])
            hidden = self.decoder(x, self_mask, positions, encoded, cross_mask)
        return self.lm_head(hidden)

    def __call__(
        self,
        source: jax.Array,
        target: jax.Array,
        source_valid: jax.Array | None = None,
        target_valid: jax.Array | None = None,
        source_positions: jax.Array | None = None,
        target_positions: jax.Array | None = None,
        source_segment_ids: jax.Array | None = None,
        target_segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """source [B, S], target [B, T] (decoder inputs, shifted right) -> logits [B, T, V]."""
        encoded = self.encode(source, source_valid, source_positions, source_segment_ids)
        return self.decode_step(
            target, encoded, source_valid, target_positions, target_segment_ids, source_segment_ids, target_valid
        )
