"""Named architectures. `get(name)` returns a validated `ModelConfig`; `names()` lists them.

Full-size presets follow their papers/checkpoints; each has a `tiny-` twin with
small, odd, all-different sizes (so a transposed axis cannot pass a test).
"""

from __future__ import annotations

import difflib

from jaxformer.config import ModelConfig

_GPT2 = dict(
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
_BERT = dict(
    family="encoder_only",
    vocab_size=30522,
    max_len=512,
    activation="gelu",
    norm="layernorm",
    norm_position="post",
    norm_eps=1e-12,
    position="learned",
    num_token_types=2,
    embedding_norm=True,
    pooler=True,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)
_T5 = dict(
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
_TRANSFORMER = dict(
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

# Tiny twins: odd sizes, heads dividing width, KV heads fewer than heads where the family allows.
_TINY = dict(
    vocab_size=99,
    d_model=36,
    num_heads=4,
    d_ff=37,
    num_layers=2,
    max_len=64,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)

_PRESETS: dict[str, dict] = {
    "gpt2-small": dict(_GPT2, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "gpt2-medium": dict(_GPT2, d_model=1024, num_heads=16, d_ff=4096, num_layers=24),
    "bert-base": dict(_BERT, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "t5-small": dict(_T5, d_model=512, num_heads=8, d_ff=2048, num_layers=6),
    "t5-base": dict(_T5, d_model=768, num_heads=12, d_ff=3072, num_layers=12),
    "transformer-base": dict(_TRANSFORMER, d_model=512, num_heads=8, d_ff=2048, num_layers=6),
    "transformer-big": dict(_TRANSFORMER, d_model=1024, num_heads=16, d_ff=4096, num_layers=6, dropout_rate=0.3),
    "tiny-gpt2": dict(_GPT2, **_TINY),
    "tiny-bert": dict(_BERT, **dict(_TINY, num_layers=3)),
    "tiny-t5": dict(_T5, **dict(_TINY, head_dim=10, relative_buckets=8, relative_max_distance=20)),
    "tiny-transformer": dict(_TRANSFORMER, **dict(_TINY, num_decoder_layers=3)),
    "tiny-llama": dict(
        family="decoder_only",
        vocab_size=99,
        d_model=36,
        num_heads=6,
        num_kv_heads=2,
        d_ff=37,
        num_layers=2,
        max_len=64,
        activation="swiglu",
        norm="rmsnorm",
        norm_position="pre",
        position="rotary",
        use_bias=False,
        tie_embeddings=False,
    ),
}


def names() -> list[str]:
    """All preset names, sorted."""
    return sorted(_PRESETS)


def get(name: str, **overrides: object) -> ModelConfig:
    """The `ModelConfig` of preset `name`, with optional field overrides."""
    if name not in _PRESETS:
        hint = difflib.get_close_matches(name, names(), n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown preset {name!r}.{suggestion} Available: {names()}")
    return ModelConfig(**_PRESETS[name]).replace(**overrides)
