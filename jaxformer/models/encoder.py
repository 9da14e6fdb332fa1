"""Encoder-only model (BERT-like): embeddings -> bidirectional stack -> optional heads.

Legend: B batch, T length, D model width, V vocabulary, C classes.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxformer.config import ModelConfig
from jaxformer.models.embeddings import InputEmbedding, encoder_positions, token_embed
from jaxformer.models.heads import ClassifierHead, MaskedLMHead, Pooler, SpanHead, TokenClassifierHead
from jaxformer.models.inputs import attention_mask, check_same_shape, check_tokens
from jaxformer.models.stack import TransformerStack


class EncoderOnly(nn.Module):
    """BERT-like encoder.

    __call__(tokens [B, T], token_type_ids [B, T], valid [B, T] bool, positions [B, T],
    segment_ids [B, T]) returns a dict: "hidden" [B, T, D]; "pooled" [B, D] with a
    pooler; "logits" [B, T, V] for encoder_head="mlm", [B, C] for "classification", [B, T, C]
    for "token_classification"; "start_logits" and "end_logits" [B, T] for "qa".
    """

    config: ModelConfig
    deterministic: bool = True

    def setup(self) -> None:
        cfg = self.config
        self.embed = token_embed(cfg)
        self.embedding = InputEmbedding(cfg, self.embed, self.deterministic)
        self.encoder = TransformerStack(cfg, cfg.num_layers, causal=False, deterministic=self.deterministic)
        if cfg.pooler or cfg.encoder_head == "classification":
            self.pooler = Pooler(cfg)
        if cfg.encoder_head == "mlm":
            self.mlm_head = MaskedLMHead(cfg, self.embed)
        if cfg.encoder_head == "classification":
            self.classifier = ClassifierHead(cfg, self.deterministic)
        if cfg.encoder_head == "qa":
            self.qa_head = SpanHead(cfg)
        if cfg.encoder_head == "token_classification":
            self.token_classifier = TokenClassifierHead(cfg, self.deterministic)

    def __call__(
        self,
        tokens: jax.Array,
        token_type_ids: jax.Array | None = None,
        valid: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        cfg = self.config
        check_tokens(cfg, tokens)
        check_same_shape(
            tokens, token_type_ids=token_type_ids, valid=valid, positions=positions, segment_ids=segment_ids
        )
        positions = encoder_positions(cfg, tokens) if positions is None else positions
        x = self.embedding(tokens, positions, token_type_ids)
        hidden = self.encoder(x, attention_mask(valid, segment_ids, tokens.shape[1]), positions)
        out = {"hidden": hidden}
        if cfg.pooler or cfg.encoder_head == "classification":
            out["pooled"] = self.pooler(hidden)
        if cfg.encoder_head == "mlm":
            out["logits"] = self.mlm_head(hidden)
        elif cfg.encoder_head == "classification":
            out["logits"] = self.classifier(out["pooled"])
        elif cfg.encoder_head == "qa":
            out["start_logits"], out["end_logits"] = self.qa_head(hidden)
        elif cfg.encoder_head == "token_classification":
            out["logits"] = self.token_classifier(hidden)
        return out
