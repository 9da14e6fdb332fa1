"""MarianMT (Junczys-Dowmunt et al. 2018; Helsinki-NLP opus-mt) <-> jaxformer encoder-decoder.

HF names are those of `MarianMTModel` without its "model." prefix. Marian is the
2017 Transformer: post-norm, biases everywhere, token embeddings scaled by
sqrt(d_model) (`scale_embedding`), fixed sinusoidal positions with all sines
before all cosines (jaxformer `sinusoidal_layout="concat"`), positions 0..T-1
in both stacks, LayerNorm eps 1e-5 (not configurable in HF), swish activation
and a `final_logits_bias` [1, V] added to the logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.config import ModelConfig
from jaxformer.hf.common import (
    COPY,
    FLAT,
    LINEAR_IN,
    LINEAR_OUT,
    ROW,
    Architecture,
    Rule,
    activation_from_hf,
    activation_to_hf,
    is_tied,
    pad_id_from_hf,
    per_layer,
    require,
    table,
    unsupported,
)
from jaxformer.layers.positions import sinusoidal_table

MODEL_TYPE = "marian"
NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which HF Marian always uses


def attention(hf_name: str, jax_name: str) -> list[tuple[str, str, Any]]:
    out = []
    for hf_proj, jax_proj in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        out.append((f"{hf_name}.{hf_proj}.weight", f"{jax_name}/{jax_proj}_kernel", LINEAR_IN))  # [N*H, D] -> [D, N, H]
        out.append((f"{hf_name}.{hf_proj}.bias", f"{jax_name}/{jax_proj}_bias", FLAT))  # [N*H] -> [N, H]
    out.append((f"{hf_name}.out_proj.weight", f"{jax_name}/out_kernel", LINEAR_OUT))  # [D, N*H] -> [N, H, D]
    out.append((f"{hf_name}.out_proj.bias", f"{jax_name}/out_bias", COPY))
    return out


def norm(hf_name: str, jax_name: str) -> list[tuple[str, str, Any]]:
    return [(f"{hf_name}.weight", f"{jax_name}/scale", COPY), (f"{hf_name}.bias", f"{jax_name}/bias", COPY)]


FEED_FORWARD = [
    ("fc1.weight", "mlp/up_kernel", LINEAR_IN),  # [F, D] -> [D, F]
    ("fc1.bias", "mlp/up_bias", COPY),
    ("fc2.weight", "mlp/down_kernel", LINEAR_IN),  # [D, F] -> [F, D]
    ("fc2.bias", "mlp/down_bias", COPY),
    *norm("final_layer_norm", "mlp_norm"),  # Marian's per-layer "final" norm follows the feed-forward
]
ENCODER_LAYER = [
    *attention("self_attn", "self_attention"),
    *norm("self_attn_layer_norm", "self_attention_norm"),
    *FEED_FORWARD,
]
DECODER_LAYER = [
    *attention("self_attn", "self_attention"),
    *norm("self_attn_layer_norm", "self_attention_norm"),
    *attention("encoder_attn", "cross_attention"),
    *norm("encoder_attn_layer_norm", "cross_attention_norm"),
    *FEED_FORWARD,
]


def rules(config: ModelConfig) -> list[Rule]:
    if config.share_embeddings:
        out = table("", "", [("shared.weight", "embed/embedding", COPY)])  # [V, D]
    else:
        out = table(
            "",
            "",
            [
                ("encoder.embed_tokens.weight", "embed/embedding", COPY),
                ("decoder.embed_tokens.weight", "target_embed/embedding", COPY),
            ],
        )
    out += per_layer("encoder.layers.{i}.", "encoder/layers_{i}/", ENCODER_LAYER, config.num_layers)
    out += per_layer("decoder.layers.{i}.", "decoder/layers_{i}/", DECODER_LAYER, config.decoder_layers)
    if config.final_logits_bias:
        out.append(Rule("final_logits_bias", ("lm_head/final_logits_bias",), ROW))  # [1, V] -> [V]
    if not config.tie_embeddings:
        out.append(Rule("lm_head.weight", ("lm_head/lm_head/kernel",), LINEAR_IN))  # [V, D] -> [D, V]
    return out


def aliases(config: ModelConfig) -> list[tuple[str, str]]:
    target = "shared.weight" if config.share_embeddings else "decoder.embed_tokens.weight"
    out = [("lm_head.weight", target)] if config.tie_embeddings else []
    if config.share_embeddings:
        out += [("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight")]
    return out


def check_position_tables(config: ModelConfig, tensors: Mapping[str, np.ndarray]) -> None:
    """Stored sinusoid tables (older checkpoints) must be the ones jaxformer computes."""
    for name in ("encoder.embed_positions.weight", "decoder.embed_positions.weight"):
        if name not in tensors:
            continue
        stored = np.asarray(tensors[name], np.float32)
        expected = sinusoidal_table(stored.shape[0], config.d_model, "concat")
        if stored.shape != expected.shape or not np.allclose(stored, expected, atol=1e-5):
            raise unsupported(
                MODEL_TYPE,
                f"{name} is not the sinusoid table (sines then cosines) that Marian computes",
                "Learned positions?",
            )


def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf.get(a) != hf.get(b):
            raise unsupported(MODEL_TYPE, f"{a}={hf.get(a)} differs from {b}={hf.get(b)}", "jaxformer uses one value.")
    vocab_size = require(hf, "vocab_size", MODEL_TYPE)
    if hf.get("decoder_vocab_size") not in (None, vocab_size):
        raise unsupported(MODEL_TYPE, f"decoder_vocab_size={hf['decoder_vocab_size']} != vocab_size={vocab_size}")
    if hf.get("normalize_before") or hf.get("normalize_embedding") or hf.get("add_final_layer_norm"):
        raise unsupported(MODEL_TYPE, "pre-norm / embedding norm options (normalize_before etc.)")
    share = bool(hf.get("share_encoder_decoder_embeddings", True))
    target = "shared.weight" if share else "decoder.embed_tokens.weight"
    return ModelConfig(
        family="encoder_decoder",
        vocab_size=vocab_size,
        d_model=require(hf, "d_model", MODEL_TYPE),
        num_heads=require(hf, "encoder_attention_heads", MODEL_TYPE),
        d_ff=require(hf, "encoder_ffn_dim", MODEL_TYPE),
        num_layers=require(hf, "encoder_layers", MODEL_TYPE),
        num_decoder_layers=require(hf, "decoder_layers", MODEL_TYPE),
        max_len=require(hf, "max_position_embeddings", MODEL_TYPE),
        dropout_rate=float(hf.get("dropout", 0.1)),
        attention_dropout_rate=float(hf.get("attention_dropout", 0.0)),
        activation=activation_from_hf(hf.get("activation_function", "gelu"), MODEL_TYPE, "activation_function"),
        norm="layernorm",
        norm_position="post",
        norm_eps=NORM_EPS,
        position="sinusoidal",
        sinusoidal_layout="concat",
        use_bias=True,
        embed_scale=bool(hf.get("scale_embedding", False)),
        tie_embeddings=is_tied(hf, tensors, "lm_head.weight", target),
        share_embeddings=share,
        final_logits_bias="final_logits_bias" in tensors,
        pad_token_id=pad_id_from_hf(hf, vocab_size),
        initializer_range=float(hf.get("init_std", 0.02)),
    )


EXPORT_FIELDS = dict(
    family="encoder_decoder",
    position="sinusoidal",
    sinusoidal_layout="concat",
    norm="layernorm",
    norm_position="post",
    norm_eps=NORM_EPS,
    use_bias=True,
    scale_attention_logits=True,
    embedding_norm=False,
    tied_logits_rescale=False,
)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["MarianMTModel"],
        "is_encoder_decoder": True,
        "vocab_size": config.vocab_size,
        "decoder_vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "encoder_layers": config.num_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_attention_heads": config.num_heads,
        "decoder_attention_heads": config.num_heads,
        "encoder_ffn_dim": config.d_ff,
        "decoder_ffn_dim": config.d_ff,
        "max_position_embeddings": config.max_len,
        "activation_function": activation_to_hf(config, MODEL_TYPE),
        "dropout": config.dropout_rate,
        "attention_dropout": config.attention_dropout_rate,
        "activation_dropout": 0.0,
        "init_std": config.initializer_range,
        "scale_embedding": config.embed_scale,
        "share_encoder_decoder_embeddings": config.share_embeddings,
        "tie_word_embeddings": config.tie_embeddings,
        "pad_token_id": config.pad_token_id,
        "decoder_start_token_id": config.pad_token_id,
    }


ARCHITECTURE = Architecture(
    model_type=MODEL_TYPE,
    prefix="model.",
    head_names=("lm_head.", "final_logits_bias"),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    export_fields=EXPORT_FIELDS,
    rules=rules,
    uses_prefix=lambda config: True,
    aliases=aliases,
    ignored=(r"^(encoder|decoder)\.embed_positions\.weight$",),
    check_ignored=check_position_tables,
)
