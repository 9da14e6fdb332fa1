"""DistilBERT (Sanh et al. 2019): BERT's post-LayerNorm encoder without token types or pooler, distilled to 6
layers; its sequence classifier is ReLU(W h[:, 0] + b) -> dropout -> dense.

FIXED holds the fields every model of the architecture shares (used by its presets and by
`jaxformer.hf` import/export); PRESETS the published size and a tiny odd-sized twin.
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
    norm_eps=1e-12,  # fixed in transformers' DistilBERT, not a config.json key
    position="learned",  # sinusoidal_pos_embds only initialises the stored table
    num_token_types=0,
    embedding_norm=True,
    pooler=False,
    pooler_activation="relu",  # the pre_classifier of DistilBertForSequenceClassification
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)

PRESETS: dict[str, dict] = {
    "distilbert-base-uncased": dict(FIXED, d_model=768, num_heads=12, d_ff=3072, num_layers=6),
    "tiny-distilbert": dict(FIXED, **dict(TINY, num_layers=2, d_model=39, num_heads=3, d_ff=41)),
}
