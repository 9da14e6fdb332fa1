"""Llama, Mistral, Qwen2 and Qwen3 <-> jaxformer decoder-only: one mapping table, four config translations.

The four `transformers` families share their tensor names (`LlamaForCausalLM` layout, base prefix
"model."); they differ only in config data: q/k/v biases (Qwen2), per-head q/k RMSNorm (Qwen3),
sliding windows (Mistral; Qwen2/Qwen3 from layer `max_window_layers` on), RoPE scaling. nn.Linear
weights are [out, in]; jaxformer kernels [in, out] with heads split out (D model, N heads, K kv heads,
H head size, F feed-forward, V vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import llama as llama_arch
from jaxformer.config import ModelConfig
from jaxformer.hf.common import (
    COPY,
    FLAT,
    LINEAR_IN,
    LINEAR_OUT,
    Architecture,
    Entry,
    Key,
    Rule,
    cannot_export,
    config_from_keys,
    export_fields,
    is_tied,
    per_layer,
    require,
    table,
    unsupported,
    write_keys,
)

PROJECTIONS: list[Entry] = [  # layers.{i}. <-> decoder/layers_{i}/ (shared with hf/gemma)
    ("self_attn.q_proj.weight", "self_attention/query_kernel", LINEAR_IN),  # [N*H, D] -> [D, N, H]
    ("self_attn.k_proj.weight", "self_attention/key_kernel", LINEAR_IN),  # [K*H, D] -> [D, K, H]
    ("self_attn.v_proj.weight", "self_attention/value_kernel", LINEAR_IN),
    ("self_attn.o_proj.weight", "self_attention/out_kernel", LINEAR_OUT),  # [D, N*H] -> [N, H, D]
    ("mlp.gate_proj.weight", "mlp/gate_kernel", LINEAR_IN),  # [F, D] -> [D, F]
    ("mlp.up_proj.weight", "mlp/up_kernel", LINEAR_IN),
    ("mlp.down_proj.weight", "mlp/down_kernel", LINEAR_IN),  # [D, F] -> [F, D]
]
NORMS: list[Entry] = [  # one pre-norm per sub-layer
    ("input_layernorm.weight", "self_attention_norm/scale", COPY),  # [D]
    ("post_attention_layernorm.weight", "mlp_norm/scale", COPY),
]
QKV_BIAS: list[Entry] = [
    ("self_attn.q_proj.bias", "self_attention/query_bias", FLAT),  # [N*H] -> [N, H]
    ("self_attn.k_proj.bias", "self_attention/key_bias", FLAT),
    ("self_attn.v_proj.bias", "self_attention/value_bias", FLAT),
]
QK_NORM: list[Entry] = [
    ("self_attn.q_norm.weight", "self_attention/query_norm_scale", COPY),  # [H]
    ("self_attn.k_norm.weight", "self_attention/key_norm_scale", COPY),
]
GLOBAL: list[Entry] = [
    ("embed_tokens.weight", "embed/embedding", COPY),  # [V, D]
    ("norm.weight", "decoder/final_norm/scale", COPY),
]
UNTIED_HEAD = Rule("lm_head.weight", ("lm_head/lm_head/kernel",), LINEAR_IN)  # [V, D] -> [D, V]


def decoder_rules(config: ModelConfig, layer: list[Entry]) -> list[Rule]:
    """The LlamaForCausalLM layout: embeddings, `layer` per decoder layer, final norm, untied head if any."""
    out = table("", "", GLOBAL) + per_layer("layers.{i}.", "decoder/layers_{i}/", layer, config.num_layers)
    return out if config.tie_embeddings else [*out, UNTIED_HEAD]


def rules(config: ModelConfig) -> list[Rule]:
    return decoder_rules(
        config, NORMS + PROJECTIONS + (QKV_BIAS if config.qkv_bias else []) + (QK_NORM if config.qk_norm else [])
    )


def rope_from_hf(hf: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or `rope_scaling` + `rope_theta`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    out: dict[str, Any] = dict(rotary_base=float(theta))
    fraction = params.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
    if fraction is not None:
        out["rotary_fraction"] = float(fraction)
    if kind == "default":
        return out
    if kind not in ("linear", "dynamic", "llama3", "yarn"):
        raise unsupported(model_type, f"rope_type={kind!r}", "Supported: default, linear, dynamic, llama3, yarn.")
    if params.get("mscale") or params.get("mscale_all_dim"):
        raise unsupported(model_type, "yarn mscale/mscale_all_dim", "Set attention_factor instead.")
    max_len = require(hf, "max_position_embeddings", model_type)
    original = params.get("original_max_position_embeddings") or max_len
    out.update(rope_scaling=kind, rope_factor=float(params["factor"]))
    out["rope_original_max_len"] = int(max_len if kind == "dynamic" else original)
    if kind == "llama3":
        out.update(
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
        )
    if kind == "yarn":
        out.update(
            rope_beta_fast=float(params.get("beta_fast") or 32.0),
            rope_beta_slow=float(params.get("beta_slow") or 1.0),
            rope_attention_factor=params.get("attention_factor"),
            rope_truncate=bool(params.get("truncate", True)),
        )
    return out


def rope_to_hf(config: ModelConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default" if config.rope_scaling == "none" else config.rope_scaling}
    params["rope_theta"] = config.rotary_base
    if config.rotary_fraction != 1.0:
        params["partial_rotary_factor"] = config.rotary_fraction
    if config.rope_scaling != "none":
        params["factor"] = config.rope_factor
    if config.rope_scaling in ("llama3", "yarn"):
        params["original_max_position_embeddings"] = config.rope_original_max_len or config.max_len
    if config.rope_scaling == "llama3":
        params.update(low_freq_factor=config.rope_low_freq_factor, high_freq_factor=config.rope_high_freq_factor)
    if config.rope_scaling == "yarn":
        params.update(beta_fast=config.rope_beta_fast, beta_slow=config.rope_beta_slow, truncate=config.rope_truncate)
        if config.rope_attention_factor is not None:
            params["attention_factor"] = config.rope_attention_factor
    return params


def window_from_hf(hf: Mapping[str, Any], model_type: str, layers: int) -> dict[str, Any]:
    window = hf.get("sliding_window")
    if model_type == "mistral":
        return {} if window is None else dict(sliding_window=int(window))
    if model_type == "llama" or not hf.get("use_sliding_window") or window is None:
        return {}
    first = int(hf.get("max_window_layers", layers))
    local = tuple(range(first, layers))
    return dict(sliding_window=int(window), sliding_window_layers=local) if local else {}


KEYS = (  # config.json key <-> ModelConfig field, the same in the four families
    Key("vocab_size", "vocab_size", required=True),
    Key("hidden_size", "d_model", required=True),
    Key("num_attention_heads", "num_heads", required=True),
    Key("num_key_value_heads", "num_kv_heads", default=lambda got: got["num_heads"], write=lambda c: c.kv_heads),
    Key("head_dim", "head_dim", default=lambda got: got["d_model"] // got["num_heads"], write=lambda c: c.dim_per_head),
    Key("intermediate_size", "d_ff", required=True),
    Key("num_hidden_layers", "num_layers", required=True),
    Key("max_position_embeddings", "max_len", required=True),
    Key("rms_norm_eps", "norm_eps", default=1e-6, read=float),
    Key("attention_dropout", "attention_dropout_rate", read=float),
    Key("initializer_range", "initializer_range", read=float),
    Key("tie_word_embeddings", "tie_embeddings", read=bool),  # on import decided with the tensors (is_tied)
)
DERIVED = ("tie_embeddings",)


def make_config_from_hf(model_type: str):
    def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise unsupported(model_type, f"hidden_act={act!r}", "Only 'silu' (SwiGLU) is supported.")
        if hf.get("mlp_bias"):
            raise unsupported(model_type, "mlp_bias=True")
        layers = require(hf, "num_hidden_layers", model_type)
        bias = model_type == "qwen2" or (model_type != "mistral" and bool(hf.get("attention_bias", False)))
        return config_from_keys(
            hf,
            model_type,
            llama_arch.FIXED,
            KEYS,
            DERIVED,
            tie_embeddings=is_tied(hf, tensors, "lm_head.weight", "embed_tokens.weight"),
            qkv_bias=bias,
            qk_norm=model_type == "qwen3",
            **rope_from_hf(hf, model_type),
            **window_from_hf(hf, model_type, layers),
        )

    return config_from_hf


CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
CLASSES["qwen3"] = "Qwen3ForCausalLM"


def make_config_to_hf(model_type: str):
    def config_to_hf(config: ModelConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": [CLASSES[model_type]],
            **write_keys(config, KEYS),
            "hidden_act": "silu",
            "rope_parameters": rope_to_hf(config),
            "pad_token_id": config.pad_token_id,
        }
        if model_type in ("llama", "qwen3"):
            out["attention_bias"] = config.qkv_bias
        if model_type == "mistral":
            out["sliding_window"] = config.sliding_window
        elif model_type != "llama":
            windows = config.layer_windows()
            local = [i for i, w in enumerate(windows) if w]
            out["use_sliding_window"] = bool(local)
            out["sliding_window"] = config.sliding_window
            out["max_window_layers"] = local[0] if local else config.num_layers
        return out

    return config_to_hf


def check_export(model_type: str):
    def check(config: ModelConfig) -> None:
        bad = []
        if config.qk_norm != (model_type == "qwen3"):
            bad.append(f"qk_norm={config.qk_norm}")
        if model_type == "qwen2" and not config.qkv_bias:
            bad.append("qkv_bias=False (Qwen2 always has q/k/v biases)")
        if model_type == "mistral" and config.sliding_window_layers is not None:
            bad.append("sliding_window_layers (Mistral slides in every layer)")
        if model_type == "llama" and config.sliding_window is not None:
            bad.append("sliding_window (Llama has none)")
        if model_type in ("qwen2", "qwen3") and config.sliding_window is not None:
            local = [i for i, w in enumerate(config.layer_windows()) if w]
            if local != list(range(local[0] if local else 0, config.num_layers)):
                bad.append("sliding_window_layers (Qwen slides in layers max_window_layers.. only)")
        if config.activation != "swiglu" or config.norm != "rmsnorm" or config.position != "rotary":
            bad.append("activation/norm/position (needs swiglu, rmsnorm, rotary)")
        if bad:
            raise cannot_export(model_type, "; ".join(bad), f"use a {model_type} preset's fields")

    return check


# FIXED's family, norm_position and use_bias, and the features Llama lacks (activation, norm and position are
# checked by check_export, naming the model type).
PLAIN = ("embed_scale", "embedding_norm", "final_logits_bias", "tied_logits_rescale", "scale_attention_logits")
EXPORT_FIELDS = export_fields(llama_arch.FIXED, (), free=("activation", "norm", "position"), plain=PLAIN)


def decoder_llm(
    model_type: str,
    config_from_hf: Any,
    config_to_hf: Any,
    export_fields: Any,
    rules: Any,
    check_export_extra: Any,
    ignored: tuple[str, ...] = (r"^layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", r"^rotary_emb\.inv_freq$"),
) -> Architecture:
    """The Architecture of a decoder LLM laid out as `transformers`' *ForCausalLM: body under "model.", an
    `lm_head` (tied to `embed_tokens` when the config ties), free head_dim, grouped-query attention."""
    return Architecture(
        model_type=model_type,
        prefix="model.",
        head_names=("lm_head.",),
        config_from_hf=config_from_hf,
        config_to_hf=config_to_hf,
        export_fields=export_fields,
        rules=rules,
        uses_prefix=lambda config: True,
        aliases=lambda config: [("lm_head.weight", "embed_tokens.weight")] if config.tie_embeddings else [],
        ignored=ignored,
        head_dim_free=True,
        grouped_query=True,
        check_export_extra=check_export_extra,
    )


def architecture(model_type: str) -> Architecture:
    return decoder_llm(
        model_type,
        make_config_from_hf(model_type),
        make_config_to_hf(model_type),
        EXPORT_FIELDS,
        rules,
        check_export(model_type),
    )


ARCHITECTURES = {name: architecture(name) for name in ("llama", "mistral", "qwen2", "qwen3")}
