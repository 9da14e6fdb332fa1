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

from jaxformer.architectures import marian as marian_arch
from jaxformer.config import ModelConfig
from jaxformer.hf.common import (
    COPY,
    FLAT,
    LINEAR_IN,
    LINEAR_OUT,
    ROW,
    Architecture,
    Key,
    Rule,
    activation_key,
    config_from_keys,
    export_fields,
    is_tied,
    per_layer,
    table,
    unsupported,
    write_keys,
)
from jaxformer.layers.positions import sinusoidal_table

MODEL_TYPE = "marian"


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


KEYS = (  # config.json key <-> ModelConfig field; missing keys take FIXED's (else ModelConfig's) value
    Key("vocab_size", "vocab_size", required=True, twins=("decoder_vocab_size",)),
    Key("d_model", "d_model", required=True),
    Key("encoder_attention_heads", "num_heads", required=True, twins=("decoder_attention_heads",)),
    Key("encoder_ffn_dim", "d_ff", required=True, twins=("decoder_ffn_dim",)),
    Key("encoder_layers", "num_layers", required=True),
    Key("decoder_layers", "num_decoder_layers", required=True, write=lambda c: c.decoder_layers),
    Key("max_position_embeddings", "max_len", required=True),
    Key("dropout", "dropout_rate", read=float),
    Key("attention_dropout", "attention_dropout_rate", read=float),
    # MarianConfig's default activation is "gelu"; opus-mt checkpoints say "swish".
    activation_key("activation_function", MODEL_TYPE, default="gelu"),
    Key("init_std", "initializer_range", read=float),
    Key("scale_embedding", "embed_scale", read=bool),
    Key("share_encoder_decoder_embeddings", "share_embeddings", read=bool),
    Key("tie_word_embeddings", "tie_embeddings", read=bool),  # on import decided with the tensors (is_tied)
)
DERIVED = ("tie_embeddings", "final_logits_bias")  # from the tensors present
PLAIN = ("scale_attention_logits", "embedding_norm", "tied_logits_rescale")
EXPORT_FIELDS = export_fields(marian_arch.FIXED, KEYS, DERIVED, PLAIN)
TARGET = "decoder.embed_tokens.weight"  # the target table when the embeddings are not shared


def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
    if hf.get("normalize_before") or hf.get("normalize_embedding") or hf.get("add_final_layer_norm"):
        raise unsupported(MODEL_TYPE, "pre-norm / embedding norm options (normalize_before etc.)")

    def tied(fields: dict[str, Any]) -> bool:
        return is_tied(hf, tensors, "lm_head.weight", "shared.weight" if fields["share_embeddings"] else TARGET)

    final_bias = "final_logits_bias" in tensors
    return config_from_keys(
        hf, MODEL_TYPE, marian_arch.FIXED, KEYS, DERIVED, tie_embeddings=tied, final_logits_bias=final_bias
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["MarianMTModel"],
        "is_encoder_decoder": True,
        **write_keys(config, KEYS),
        "activation_dropout": 0.0,
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
