"""GPT-2 (Radford et al. 2019) <-> jaxformer decoder-only: mapping table and config fields.

HF names are those of `GPT2LMHeadModel` without its "transformer." prefix. GPT-2's
`Conv1D` weights are [in, out]; c_attn packs query, key and value side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import gpt2 as gpt2_arch
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


KEYS = (  # config.json key <-> ModelConfig field; missing keys take FIXED's value
    Key("vocab_size", "vocab_size", required=True),
    Key("n_embd", "d_model", required=True),
    Key("n_head", "num_heads", required=True),
    Key("n_inner", "d_ff", default=lambda got: 4 * got["d_model"]),
    Key("n_layer", "num_layers", required=True),
    Key("n_positions", "max_len", required=True),
    Key("resid_pdrop", "dropout_rate", read=float),
    Key("attn_pdrop", "attention_dropout_rate", read=float),
    activation_key("activation_function", MODEL_TYPE),
    Key("layer_norm_epsilon", "norm_eps", read=float),
    Key("scale_attn_weights", "scale_attention_logits", read=bool),
    Key("initializer_range", "initializer_range", read=float),
    Key("tie_word_embeddings", "tie_embeddings", read=bool),  # on import decided with the tensors (is_tied)
)
DERIVED = ("tie_embeddings",)
PLAIN = ("use_bias", "embed_scale", "embedding_norm", "final_logits_bias", "tied_logits_rescale", "position_offset")
EXPORT_FIELDS = export_fields(gpt2_arch.FIXED, KEYS, DERIVED, PLAIN)


def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
    if hf.get("add_cross_attention"):
        raise unsupported(MODEL_TYPE, "add_cross_attention=True (GPT-2 with cross-attention)")
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise unsupported(MODEL_TYPE, "scale_attn_by_inverse_layer_idx=True")
    tied = is_tied(hf, tensors, "lm_head.weight", "wte.weight")
    return config_from_keys(hf, MODEL_TYPE, gpt2_arch.FIXED, KEYS, DERIVED, tie_embeddings=tied)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        **write_keys(config, KEYS),
        "embd_pdrop": config.dropout_rate,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
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
