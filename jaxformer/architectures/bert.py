"""BERT (Devlin et al. 2019): encoder-only, post-LayerNorm, token types, pooler.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="encoder_only",
    vocab_size=30522,
    max_len=512,
    activation="gelu",
    norm="layernorm",
    norm_position="post",
    norm_eps=1e-12,
    position="learned",
    num_token_types=2,
    embedding_norm=True,
    pooler=True,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)

PRESETS: dict[str, dict] = {
    "bert-base": dict(FIXED, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "tiny-bert": dict(FIXED, **dict(TINY, num_layers=3)),
}
