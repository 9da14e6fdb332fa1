"""Qwen2 / Qwen2.5 (biases on q/k/v only) and Qwen3 (per-head q/k RMSNorm, head_dim free of d_model / N).

PRESETS: the published sizes (values of `Qwen/Qwen2.5-0.5B` and `Qwen/Qwen3-0.6B` `config.json`,
both with `use_sliding_window: false`) and tiny odd-sized twins.
"""

from __future__ import annotations

from jaxformer.architectures.llama import LLM

QWEN2: dict = dict(LLM, qkv_bias=True, norm_eps=1e-6)
QWEN3: dict = dict(LLM, qk_norm=True, norm_eps=1e-6)

PRESETS: dict[str, dict] = {
    "qwen2.5-0.5b": dict(
        QWEN2,
        vocab_size=151936,
        d_model=896,
        num_heads=14,
        num_kv_heads=2,
        d_ff=4864,
        num_layers=24,
        max_len=32768,
        rotary_base=1000000.0,
        tie_embeddings=True,
    ),
    "qwen3-0.6b": dict(
        QWEN3,
        vocab_size=151936,
        d_model=1024,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        d_ff=3072,
        num_layers=28,
        max_len=40960,
        rotary_base=1000000.0,
        tie_embeddings=True,
    ),
    "tiny-qwen2": dict(
        QWEN2,
        vocab_size=101,
        d_model=40,
        num_heads=4,
        num_kv_heads=2,
        d_ff=43,
        num_layers=2,
        max_len=64,
        tie_embeddings=True,
    ),
    "tiny-qwen3": dict(
        QWEN3,
        vocab_size=103,
        d_model=36,
        num_heads=4,
        num_kv_heads=2,
        head_dim=10,
        d_ff=39,
        num_layers=3,
        max_len=64,
        tie_embeddings=False,
    ),
}
