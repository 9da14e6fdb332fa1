"""RoBERTa (Liu et al. 2019) and XLM-RoBERTa (Conneau et al. 2020): BERT's post-LayerNorm encoder with
positions offset by the padding index, one token type and LayerNorm eps 1e-5.

FIXED holds the fields every model of the architecture shares (used by its presets and by
`jaxformer.hf` import/export); XLM-RoBERTa differs only in its vocabulary. PRESETS: the published
sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="encoder_only",
    vocab_size=50265,
    max_len=514,  # position table rows: 512 tokens after the padding offset (pad id 1, first token at 2)
    activation="gelu",
    norm="layernorm",
    norm_position="post",
    norm_eps=1e-5,
    position="learned",
    position_rule="padding_offset",
    pad_token_id=1,
    num_token_types=1,
    embedding_norm=True,
    pooler=True,
    pooler_activation="tanh",
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)
XLM_FIXED: dict = dict(FIXED, vocab_size=250002)

BASE = dict(d_model=768, num_heads=12, d_ff=3072, num_layers=12)
PRESETS: dict[str, dict] = {
    "roberta-base": dict(FIXED, **BASE),
    "xlm-roberta-base": dict(XLM_FIXED, **BASE),
    "tiny-roberta": dict(FIXED, **dict(TINY, num_layers=2)),
}
