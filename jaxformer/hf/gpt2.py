"""GPT-2 (Radford et al. 2019) <-> jaxformer decoder-only: mapping table and config fields.

HF names are those of `GPT2LMHeadModel` without its "transformer." prefix. GPT-2's
`Conv1D` weights are [in, out]; c_attn packs query, key and value side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.config import ModelConfig
from jaxformer.hf.common import (
    CONV1D_IN,
    CONV1D_OUT,
    COPY,
    FLAT,
    LINEAR_IN,
    Architecture,
    Concat,
    Entry,
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

MODEL_TYPE = "gpt2"
QKV = ("self_attention/query", "self_attention/key", "self_attention/value")

LAYER: list[Entry] = [  # h.{i}. <-> decoder/layers_{i}/
    ("ln_1.weight", "self_attention_norm/scale", COPY),
    ("ln_1.bias", "self_attention_norm/bias", COPY),
    ("attn.c_attn.weight", tuple(f"{p}_kernel" for p in QKV), Concat(CONV1D_IN)),  # [D, 3D] -> 3 x [D, N, H]
    ("attn.c_attn.bias", tuple(f"{p}_bias" for p in QKV), Concat(FLAT)),  # [3D] -> 3 x [N, H]
    ("attn.c_proj.weight", "self_attention/out_kernel", CONV1D_OUT),  # [D, D] -> [N, H, D]
    ("attn.c_proj.bias", "self_attention/out_bias", COPY),
    ("ln_2.weight", "mlp_norm/scale", COPY),
    ("ln_2.bias", "mlp_norm/bias", COPY),
    ("mlp.c_fc.weight", "mlp/up_kernel", COPY),  # [D, F]
    ("mlp.c_fc.bias", "mlp/up_bias", COPY),
    ("mlp.c_proj.weight", "mlp/down_kernel", COPY),  # [F, D]
    ("mlp.c_proj.bias", "mlp/down_bias", COPY),
]
GLOBAL: list[Entry] = [
    ("wte.weight", "embed/embedding", COPY),  # [V, D]
    ("wpe.weight", "embedding/positions/embedding", COPY),  # [max_len, D]
    ("ln_f.weight", "decoder/final_norm/scale", COPY),
    ("ln_f.bias", "decoder/final_norm/bias", COPY),
]
UNTIED_HEAD = Rule("lm_head.weight", ("lm_head/lm_head/kernel",), LINEAR_IN)  # [V, D] -> [D, V]


def rules(config: ModelConfig) -> list[Rule]:
    out = table("", "", GLOBAL) + per_layer("h.{i}.", "decoder/layers_{i}/", LAYER, config.num_layers)
    return out if config.tie_embeddings else [*out, UNTIED_HEAD]


def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
    if hf.get("add_cross_attention"):
        raise unsupported(MODEL_TYPE, "add_cross_attention=True (GPT-2 with cross-attention)")
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise unsupported(MODEL_TYPE, "scale_attn_by_inverse_layer_idx=True")
    d_model = require(hf, "n_embd", MODEL_TYPE)
    vocab_size = require(hf, "vocab_size", MODEL_TYPE)
    return ModelConfig(
        family="decoder_only",
        vocab_size=vocab_size,
        d_model=d_model,
        num_heads=require(hf, "n_head", MODEL_TYPE),
        d_ff=hf.get("n_inner") or 4 * d_model,
        num_layers=require(hf, "n_layer", MODEL_TYPE),
        max_len=require(hf, "n_positions", MODEL_TYPE),
        dropout_rate=float(hf.get("resid_pdrop", 0.1)),
        attention_dropout_rate=float(hf.get("attn_pdrop", 0.1)),
        activation=activation_from_hf(hf.get("activation_function", "gelu_new"), MODEL_TYPE, "activation_function"),
        norm="layernorm",
        norm_position="pre",
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        position="learned",
        use_bias=True,
        scale_attention_logits=bool(hf.get("scale_attn_weights", True)),
        tie_embeddings=is_tied(hf, tensors, "lm_head.weight", "wte.weight"),
        pad_token_id=pad_id_from_hf(hf, vocab_size),
        initializer_range=float(hf.get("initializer_range", 0.02)),
    )


EXPORT_FIELDS = dict(
    family="decoder_only",
    position="learned",
    norm="layernorm",
    norm_position="pre",
    use_bias=True,
    embed_scale=False,
    embedding_norm=False,
    final_logits_bias=False,
    tied_logits_rescale=False,
)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.d_ff,
        "activation_function": activation_to_hf(config, MODEL_TYPE),
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout_rate,
        "embd_pdrop": config.dropout_rate,
        "attn_pdrop": config.attention_dropout_rate,
        "scale_attn_weights": config.scale_attention_logits,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "initializer_range": config.initializer_range,
        "tie_word_embeddings": config.tie_embeddings,
        # GPT-2 defines no padding token; jaxformer's pad id is only a data convention.
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
    }


ARCHITECTURE = Architecture(
    model_type=MODEL_TYPE,
    prefix="transformer.",
    head_names=("lm_head.",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    export_fields=EXPORT_FIELDS,
    rules=rules,
    uses_prefix=lambda config: True,
    aliases=lambda config: [("lm_head.weight", "wte.weight")] if config.tie_embeddings else [],
    # Causal-mask buffers that old checkpoints (pytorch_model.bin) carry.
    ignored=(r"^h\.\d+\.attn\.bias$", r"^h\.\d+\.attn\.masked_bias$"),
)
