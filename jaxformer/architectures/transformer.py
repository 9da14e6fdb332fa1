"""The Transformer of Vaswani et al. (2017): encoder-decoder, sinusoidal positions, post-LayerNorm.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="encoder_decoder",
    vocab_size=37000,
    max_len=1024,
    activation="relu",
    norm="layernorm",
    norm_position="post",
    norm_eps=1e-6,
    position="sinusoidal",
    embed_scale=True,
    tie_embeddings=True,
    share_embeddings=True,
    dropout_rate=0.1,
    initializer_range=0.044,  # ~ d_model**-0.5 for the shared, sqrt(D)-scaled table
)

PRESETS: dict[str, dict] = {
    "transformer-base": dict(FIXED, d_model=512, num_heads=8, d_ff=2048, num_layers=6),
    "transformer-big": dict(FIXED, d_model=1024, num_heads=16, d_ff=4096, num_layers=6, dropout_rate=0.3),
    "tiny-transformer": dict(FIXED, **dict(TINY, num_decoder_layers=3)),
}
