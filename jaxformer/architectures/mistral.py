"""Mistral (Jiang et al. 2023): the Llama recipe with sliding-window attention in every layer.

PRESETS: the published size (values of `mistralai/Mistral-7B-v0.1`'s `config.json`) and a tiny
odd-sized twin whose window is shorter than the test sequences.
"""

from __future__ import annotations

from jaxformer.architectures.llama import LLM

PRESETS: dict[str, dict] = {
    "mistral-7b-v0.1": dict(
        LLM,
        vocab_size=32000,
        d_model=4096,
        num_heads=32,
        num_kv_heads=8,
        d_ff=14336,
        num_layers=32,
        max_len=32768,
        norm_eps=1e-5,
        rotary_base=10000.0,
        sliding_window=4096,
        tie_embeddings=False,
    ),
    "tiny-mistral": dict(
        LLM,
        vocab_size=97,
        d_model=30,
        num_heads=6,
        num_kv_heads=3,
        head_dim=8,
        d_ff=41,
        num_layers=3,
        max_len=64,
        norm_eps=1e-5,
        sliding_window=5,
        tie_embeddings=False,
    ),
}
