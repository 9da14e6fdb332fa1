"""Llama (Touvron et al. 2023): decoder-only, RMSNorm, rotary positions, SwiGLU, grouped-query attention.

FIXED holds the fields every model of the architecture shares (used by its preset and by
`jaxformer.hf` import/export; Mistral and Qwen build on it); PRESETS the published sizes (values of
each model's `config.json` on the Hub) and a tiny odd-sized twin. `LLM` is the part of a published
config every one of these families states the same way (no dropout, no biases).
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
LLM: dict = dict(FIXED, dropout_rate=0.0, attention_dropout_rate=0.0, initializer_range=0.02)

# Llama 3.1/3.2 `rope_scaling` {"rope_type": "llama3", "original_max_position_embeddings": 8192, ...}.
LLAMA3_ROPE: dict = dict(
    rotary_base=500000.0,
    rope_original_max_len=8192,
    rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0,
    rope_scaling="llama3",
)

PRESETS: dict[str, dict] = {
    # HuggingFaceTB/SmolLM2-135M (LlamaForCausalLM)
    "smollm2-135m": dict(
        LLM,
        vocab_size=49152,
        d_model=576,
        num_heads=9,
        num_kv_heads=3,
        d_ff=1536,
        num_layers=30,
        max_len=8192,
        norm_eps=1e-5,
        rotary_base=100000.0,
        tie_embeddings=True,
        initializer_range=0.041666666666666664,
    ),
    # meta-llama/Llama-3.2-1B
    "llama-3.2-1b": dict(
        LLM,
        **LLAMA3_ROPE,
        vocab_size=128256,
        d_model=2048,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        d_ff=8192,
        num_layers=16,
        max_len=131072,
        norm_eps=1e-5,
        rope_factor=32.0,
        tie_embeddings=True,
    ),
    # meta-llama/Llama-3.1-8B
    "llama-3.1-8b": dict(
        LLM,
        **LLAMA3_ROPE,
        vocab_size=128256,
        d_model=4096,
        num_heads=32,
        num_kv_heads=8,
        d_ff=14336,
        num_layers=32,
        max_len=131072,
        norm_eps=1e-5,
        rope_factor=8.0,
        tie_embeddings=False,
    ),
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
