"""Llama (Touvron et al. 2023): decoder-only, RMSNorm, rotary positions, SwiGLU, grouped-query attention.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

FIXED: dict = dict(
    family="decoder_only",
    activation="swiglu",
    norm="rmsnorm",
    norm_position="pre",
    position="rotary",
    use_bias=False,
)

PRESETS: dict[str, dict] = {
    "tiny-llama": dict(
        FIXED,
        vocab_size=99,
        d_model=36,
        num_heads=6,
        num_kv_heads=2,
        d_ff=37,
        num_layers=2,
        max_len=64,
        tie_embeddings=False,
    ),
}
