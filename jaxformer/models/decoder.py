"""Decoder-only language model (GPT-like): embeddings -> causal stack -> LM head.

Legend: B batch, T length, D model width, V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxformer.config import ModelConfig
from jaxformer.errors import InputError
from jaxformer.models.embeddings import DecodePositions, InputEmbedding, default_positions, token_embed
from jaxformer.models.heads import LMHead
from jaxformer.models.inputs import causal_attention_mask, check_same_shape, check_tokens
from jaxformer.models.stack import TransformerStack


class DecoderOnly(nn.Module):
    """GPT-like LM. __call__(tokens [B, T], positions [B, T], segment_ids [B, T], valid [B, T]) -> logits [B, T, V].

    With `decode=True` the call appends to the KV cache (see MultiHeadAttention);
    `valid` then marks real tokens among the new ones (False for left padding).
    `logits_to_keep=n` (transformers' name) applies the LM head to the last n positions only
    -> logits [B, n, V]: a decoding prefill needs the last position's logits alone, and the
    head over every prompt position costs B * T * D * V multiply-adds and a [B, T, V] float32
    array (3.3 GB at batch 16, 1024 tokens, GPT-2's vocabulary).
    """

    config: ModelConfig
    deterministic: bool = True
    decode: bool = False

    def setup(self) -> None:
        cfg = self.config
        self.embed = token_embed(cfg)
        self.embedding = InputEmbedding(cfg, self.embed, self.deterministic)
        self.decoder = TransformerStack(
            cfg, cfg.num_layers, causal=True, deterministic=self.deterministic, decode=self.decode
        )
        self.lm_head = LMHead(cfg, self.embed)
        if self.decode:
            self.decode_positions = DecodePositions()

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        valid: jax.Array | None = None,
        logits_to_keep: int | None = None,
    ) -> jax.Array:
        check_tokens(self.config, tokens)
        if logits_to_keep is not None and (
            isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 1
        ):
            raise InputError(
                f"logits_to_keep must be a positive int (or None for every position), got {logits_to_keep!r}"
            )
        check_same_shape(tokens, positions=positions, segment_ids=segment_ids, valid=valid)
        if self.decode:
            positions = self.decode_positions(tokens, positions)
        elif positions is None:
            positions = default_positions(tokens)
        x = self.embedding(tokens, positions)
        if self.decode:
            hidden = self.decoder(x, None, positions, kv_valid=valid)
        else:
            hidden = self.decoder(x, causal_attention_mask(valid, segment_ids, tokens.shape[1]), positions)
        if logits_to_keep is not None:
            hidden = hidden[:, -logits_to_keep:]
        return self.lm_head(hidden)
