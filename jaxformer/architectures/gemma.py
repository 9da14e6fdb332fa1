"""Gemma (2024), Gemma 2 and Gemma 3 (text): decoder-only, GeGLU (tanh), (1 + w) RMSNorm, sqrt(D) embeddings.

Gemma 2 adds sandwich norms (a norm on each sub-layer's output too), query_pre_attn_scalar,
attention- and final-logit soft-capping and sliding-window attention in every other layer
(layers 0, 2, 4, ... slide). Gemma 3 adds per-head q/k RMSNorm and a 5 local : 1 global pattern
whose local layers use their own RoPE base (`rope_local_base`).

FIXED_<family> holds the fields every model of the family shares (used by its presets and by
`jaxformer.hf.gemma` import/export); PRESETS the published sizes (their config.json values) and
tiny odd-sized twins. Imports only the standard library.
"""

from __future__ import annotations

FIXED_GEMMA: dict = dict(
    family="decoder_only",
    activation="geglu_tanh",
    norm="rmsnorm",
    norm_position="pre",
    norm_scale_offset=1.0,
    position="rotary",
    use_bias=False,
    embed_scale=True,
    tie_embeddings=True,
)
FIXED_GEMMA2: dict = dict(FIXED_GEMMA, sandwich_norms=True)
FIXED_GEMMA3: dict = dict(FIXED_GEMMA2, qk_norm=True)
FIXED: dict = FIXED_GEMMA  # what all three share
GEMMA3_PATTERN = 6  # every 6th layer (5, 11, ...) global, the others local


def gemma2_local_layers(num_layers: int) -> tuple[int, ...]:
    """Gemma 2's sliding layers: 0, 2, 4, ... (transformers' layer_types: sliding where (i + 1) % 2)."""
    return tuple(i for i in range(num_layers) if (i + 1) % 2)


def gemma3_local_layers(num_layers: int, pattern: int = GEMMA3_PATTERN) -> tuple[int, ...]:
    """Gemma 3's sliding layers: all but every `pattern`-th ((i + 1) % pattern != 0)."""
    return tuple(i for i in range(num_layers) if (i + 1) % pattern)


PRESETS: dict[str, dict] = {
    # google/gemma-2b config.json
    "gemma-2b": dict(
        FIXED_GEMMA,
        vocab_size=256000,
        d_model=2048,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
        d_ff=16384,
        num_layers=18,
        max_len=8192,
        norm_eps=1e-6,
        rotary_base=10000.0,
    ),
    # google/gemma-2-2b config.json
    "gemma-2-2b": dict(
        FIXED_GEMMA2,
        vocab_size=256000,
        d_model=2304,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        d_ff=9216,
        num_layers=26,
        max_len=8192,
        norm_eps=1e-6,
        rotary_base=10000.0,
        query_pre_attn_scalar=256.0,
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        sliding_window=4096,
        sliding_window_layers=gemma2_local_layers(26),
    ),
    # google/gemma-3-1b-pt config.json
    "gemma-3-1b": dict(
        FIXED_GEMMA3,
        vocab_size=262144,
        d_model=1152,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        d_ff=6912,
        num_layers=26,
        max_len=32768,
        norm_eps=1e-6,
        rotary_base=1000000.0,
        rope_local_base=10000.0,
        query_pre_attn_scalar=256.0,
        sliding_window=512,
        sliding_window_layers=gemma3_local_layers(26),
    ),
    "tiny-gemma": dict(
        FIXED_GEMMA,
        vocab_size=99,
        d_model=36,
        num_heads=4,
        num_kv_heads=2,
        head_dim=10,
        d_ff=37,
        num_layers=2,
        max_len=64,
    ),
    "tiny-gemma2": dict(
        FIXED_GEMMA2,
        vocab_size=99,
        d_model=36,
        num_heads=4,
        num_kv_heads=2,
        head_dim=10,
        d_ff=37,
        num_layers=3,
        max_len=64,
        query_pre_attn_scalar=12.0,
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        sliding_window=5,
        sliding_window_layers=gemma2_local_layers(3),
    ),
    "tiny-gemma3": dict(
        FIXED_GEMMA3,
        vocab_size=99,
        d_model=36,
        num_heads=4,
        num_kv_heads=2,
        head_dim=10,
        d_ff=37,
        num_layers=7,
        max_len=64,
        rotary_base=1000000.0,
        rope_local_base=10000.0,
        query_pre_attn_scalar=12.0,
        sliding_window=5,
        sliding_window_layers=gemma3_local_layers(7),
    ),
}
