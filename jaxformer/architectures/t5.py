"""T5 (Raffel et al. 2020): encoder-decoder, RMSNorm, relative position buckets, no biases.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.

The later members differ from T5 v1.0 by data only:
- V1_1 (T5 v1.1, Flan-T5): gated-GELU feed-forward (tanh GELU), a separate LM head and no
  d_model**-0.5 rescale of the decoder output.
- MT5 (mT5, Xue et al. 2021): T5 v1.1 with the 250112-piece multilingual vocabulary; exported
  as HF model_type "mt5".
- UMT5 (umT5, Chung et al. 2023): mT5 with a relative position bias table in every self-attention
  layer (`relative_bias_per_layer`) and a 256384-piece vocabulary.
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
V1_1: dict = dict(FIXED, activation="geglu_tanh", tie_embeddings=False, tied_logits_rescale=False)
MT5: dict = dict(V1_1, vocab_size=250112, hf_model_type="mt5")
UMT5: dict = dict(V1_1, vocab_size=256384, relative_bias_per_layer=True)

TINY_T5 = dict(TINY, head_dim=10, relative_buckets=8, relative_max_distance=20)
SMALL = dict(d_model=512, num_heads=6, d_ff=1024, num_layers=8)  # v1.1 / mT5 / umT5 "small"
BASE = dict(d_model=768, num_heads=12, d_ff=2048, num_layers=12)  # v1.1 / mT5 "base"

PRESETS: dict[str, dict] = {
    "t5-small": dict(FIXED, d_model=512, num_heads=8, d_ff=2048, num_layers=6),
    "t5-base": dict(FIXED, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "tiny-t5": dict(FIXED, **TINY_T5),
    "t5-v1_1-small": dict(V1_1, **SMALL),  # google/t5-v1_1-small
    "flan-t5-small": dict(V1_1, **SMALL),  # google/flan-t5-small
    "flan-t5-base": dict(V1_1, **BASE),  # google/flan-t5-base
    "tiny-flan-t5": dict(V1_1, **TINY_T5),
    "mt5-small": dict(MT5, **SMALL),  # google/mt5-small
    "mt5-base": dict(MT5, **BASE),  # google/mt5-base
    "tiny-mt5": dict(MT5, **TINY_T5),
    "umt5-small": dict(UMT5, **SMALL),  # google/umt5-small
    "tiny-umt5": dict(UMT5, **TINY_T5),
}
