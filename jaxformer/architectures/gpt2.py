"""GPT-2 (Radford et al. 2019): decoder-only, learned positions, pre-LayerNorm, tied head.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="decoder_only",
    vocab_size=50257,
    max_len=1024,
    activation="gelu_tanh",
    norm="layernorm",
    norm_position="pre",
    norm_eps=1e-5,
    position="learned",
    tie_embeddings=True,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)

PRESETS: dict[str, dict] = {
    "gpt2-small": dict(FIXED, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "gpt2-medium": dict(FIXED, d_model=1024, num_heads=16, d_ff=4096, num_layers=24),
    "tiny-gpt2": dict(FIXED, **TINY),
}
