"""T5 (Raffel et al. 2020): encoder-decoder, RMSNorm, relative position buckets, no biases.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="encoder_decoder",
    vocab_size=32128,
    max_len=512,
    head_dim=64,
    activation="relu",
    norm="rmsnorm",
    norm_position="pre",
    norm_eps=1e-6,
    position="relative",
    use_bias=False,
    scale_attention_logits=False,
    tie_embeddings=True,
    tied_logits_rescale=True,
    share_embeddings=True,
    dropout_rate=0.1,
    initializer_range=0.05,
)

PRESETS: dict[str, dict] = {
    "t5-small": dict(FIXED, d_model=512, num_heads=8, d_ff=2048, num_layers=6),
    "t5-base": dict(FIXED, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "tiny-t5": dict(FIXED, **dict(TINY, head_dim=10, relative_buckets=8, relative_max_distance=20)),
}
