"""Encoder-decoder model: the original Transformer (Vaswani et al. 2017) and T5 (Raffel et al. 2020).

Legend: B batch, S source length, T target length, D model width, V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.errors import InputError
from jaxformer.layers import masks
from jaxformer.models.embeddings import DecodePositions, InputEmbedding, default_positions, token_embed
from jaxformer.models.heads import ClassifierHead, LMHead, Pooler
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
    With encoder_head="classification" (BartForSequenceClassification) there is no LM head:
    __call__ returns class logits [B, C] from the decoder state at the last source position
    holding `classifier_token_id` (target = source shifted right, so T == S; see `shift_right`).
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
        if cfg.encoder_head == "classification":
            self.pooler = Pooler(cfg)  # dense + tanh
            self.classifier = ClassifierHead(cfg, self.deterministic)  # dropout + out projection
        else:
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
        check_same_shape(
            source, source_valid=source_valid, source_positions=source_positions, source_segment_ids=source_segment_ids
        )
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
        """Decoder pass -> logits [B, T, V]. target [B, T]; encoded [B, S, D] (None while decoding after the first call)."""
        return self.lm_head(
            self.decoder_hidden(
                target, encoded, source_valid, target_positions, target_segment_ids, source_segment_ids, target_valid
            )
        )

    def decoder_hidden(
        self,
        target: jax.Array,
        encoded: jax.Array | None,
        source_valid: jax.Array | None = None,
        target_positions: jax.Array | None = None,
        target_segment_ids: jax.Array | None = None,
        source_segment_ids: jax.Array | None = None,
        target_valid: jax.Array | None = None,
    ) -> jax.Array:
        """The decoder's last hidden states [B, T, D] (arguments as in `decode_step`)."""
        check_tokens(self.config, target, "target")
        check_same_shape(
            target, target_positions=target_positions, target_segment_ids=target_segment_ids, target_valid=target_valid
        )
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
        return hidden

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
        args = (target, encoded, source_valid, target_positions, target_segment_ids, source_segment_ids, target_valid)
        if self.config.encoder_head == "classification":
            return self.classify(source, self.decoder_hidden(*args))
        return self.decode_step(*args)

    def classify(self, source: jax.Array, hidden: jax.Array) -> jax.Array:
        """source [B, S], decoder hidden [B, S, D] -> class logits [B, C].

        Reads hidden at the last position where source == classifier_token_id (the last position when a row
        has none), then dense + tanh + out projection.
        """
        if hidden.shape[1] != source.shape[1]:
            raise InputError(
                f"classification needs target length == source length (target = source shifted right), got "
                f"{hidden.shape[1]} and {source.shape[1]}."
            )
        token = self.config.classifier_token_id
        if token is None:  # ModelConfig refuses this combination; a direct caller may still try
            raise InputError("classify needs config.classifier_token_id (BART: its eos id).")
        hits = jnp.equal(source, token)  # [B, S]
        last = source.shape[1] - 1 - jnp.argmax(hits[:, ::-1], axis=1)  # [B]; no hit -> S - 1
        picked = jnp.take_along_axis(hidden, last[:, None, None], axis=1)  # [B, 1, D]
        return self.classifier(self.pooler(picked))


def shift_right(tokens: jax.Array, start_id: int) -> jax.Array:
    """Decoder inputs [B, T] of targets `tokens` [B, T]: `start_id`, then tokens[:, :-1] (teacher forcing)."""
    start = jnp.full((tokens.shape[0], 1), start_id, tokens.dtype)
    return jnp.concatenate([start, tokens[:, :-1]], axis=1)
