"""Gemma, Gemma 2 and Gemma 3 (text) <-> jaxformer decoder-only: mapping tables and config translations.

The `transformers` layouts (base prefix "model.") are Llama's tensor names plus, for Gemma 2/3,
the sandwich norms (`post_attention_layernorm` normalises the attention output there, and
`pre_feedforward_layernorm` / `post_feedforward_layernorm` wrap the MLP) and, for Gemma 3, the
q/k norms. Every RMSNorm weight is the w of Gemma's (1 + w), stored as is (`norm_scale_offset=1`).
Config data: GeGLU (tanh), sqrt(D) embedding scale, query_pre_attn_scalar, soft-capping, and
`layer_types` (sliding or full attention per layer; Gemma 3's `rope_parameters` per layer type
give the local layers their own RoPE base). nn.Linear weights are [out, in]; jaxformer kernels
[in, out] with heads split out (D model, N heads, K kv heads, H head size, F feed-forward, V vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import gemma as gemma_arch
from jaxformer.config import ModelConfig
from jaxformer.hf.common import (
    COPY,
    Architecture,
    Entry,
    Rule,
    cannot_export,
    export_fields,
    is_tied,
    pad_id_from_hf,
    require,
    unsupported,
)
from jaxformer.hf.llama import NORMS, PROJECTIONS, QK_NORM, decoder_llm, decoder_rules, rope_from_hf, rope_to_hf

SANDWICH_NORMS: list[Entry] = [  # Gemma 2/3: a norm before and after each sub-layer (Gemma: Llama's NORMS)
    ("input_layernorm.weight", "self_attention_norm/scale", COPY),
    ("post_attention_layernorm.weight", "self_attention_post_norm/scale", COPY),
    ("pre_feedforward_layernorm.weight", "mlp_norm/scale", COPY),
    ("post_feedforward_layernorm.weight", "mlp_post_norm/scale", COPY),
]
FIXED = {"gemma": gemma_arch.FIXED_GEMMA, "gemma2": gemma_arch.FIXED_GEMMA2, "gemma3_text": gemma_arch.FIXED_GEMMA3}
CLASSES = {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh")
SLIDING, FULL = "sliding_attention", "full_attention"


def rules(config: ModelConfig) -> list[Rule]:
    norms = SANDWICH_NORMS if config.sandwich_norms else NORMS
    return decoder_rules(config, PROJECTIONS + norms + (QK_NORM if config.qk_norm else []))


def activation_from_hf(hf: Mapping[str, Any], model_type: str) -> str:
    """GeGLU flavour: the tanh GELU (Gemma's `hidden_act="gelu"` is a legacy name for it, as in transformers)."""
    if model_type == "gemma":
        name = hf.get("hidden_act") or hf.get("hidden_activation") or "gelu_pytorch_tanh"
        if name == "gelu":
            name = "gelu_pytorch_tanh"
    else:
        name = hf.get("hidden_activation") or "gelu_pytorch_tanh"
    if name not in TANH_GELUS:
        raise unsupported(
            model_type, f"hidden activation {name!r}", "Only the tanh GELU (gelu_pytorch_tanh) is supported."
        )
    return "geglu_tanh"


def layer_types_from_hf(hf: Mapping[str, Any], model_type: str, layers: int) -> list[str]:
    """transformers' `layer_types`, or the family's default pattern when the config predates them."""
    types = hf.get("layer_types")
    if types is None:
        local = (
            gemma_arch.gemma2_local_layers(layers)
            if model_type == "gemma2"
            else gemma_arch.gemma3_local_layers(layers, int(hf.get("sliding_window_pattern") or 6))
        )
        types = [SLIDING if i in local else FULL for i in range(layers)]
    bad = sorted(set(types) - {SLIDING, FULL})
    if bad or len(types) != layers:
        raise unsupported(model_type, f"layer_types={list(types)}", f"Expected {layers} of {[SLIDING, FULL]}.")
    return list(types)


def window_from_hf(hf: Mapping[str, Any], model_type: str, layers: int) -> dict[str, Any]:
    if model_type == "gemma":
        return {}
    types = layer_types_from_hf(hf, model_type, layers)
    local = tuple(i for i, kind in enumerate(types) if kind == SLIDING)
    window = hf.get("sliding_window")
    if window is None:
        if local:
            raise unsupported(model_type, "sliding layers with sliding_window=None", "Set sliding_window.")
        return {}
    return dict(sliding_window=int(window), sliding_window_layers=local)


def rope_fields_from_hf(hf: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """RoPE fields; Gemma 3's `rope_parameters` per layer type (or legacy rope_theta + rope_local_base_freq)."""
    if model_type != "gemma3_text":
        return rope_from_hf(hf, model_type)
    params = hf.get("rope_parameters") or {}
    if FULL in params or SLIDING in params:
        full, local = dict(params.get(FULL) or {}), dict(params.get(SLIDING) or {})
    else:  # legacy keys: rope_theta + rope_scaling for the global layers, rope_local_base_freq for the local ones
        full = dict(hf.get("rope_scaling") or {}, rope_theta=hf.get("rope_theta", 1000000.0))
        local = dict(rope_type="default", rope_theta=hf.get("rope_local_base_freq", 10000.0))
    if local.get("rope_type", local.get("type", "default")) != "default":
        raise unsupported(model_type, f"sliding_attention rope_type={local.get('rope_type')!r}", "Only 'default'.")
    full.setdefault("rope_theta", 1000000.0)
    out = rope_from_hf(
        {"rope_parameters": full, "max_position_embeddings": hf.get("max_position_embeddings")}, model_type
    )
    out["rope_local_base"] = float(local.get("rope_theta", 10000.0))
    return out


def make_config_from_hf(model_type: str):
    def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
        if hf.get("attention_bias"):
            raise unsupported(model_type, "attention_bias=True")
        if hf.get("use_bidirectional_attention"):
            raise unsupported(model_type, "use_bidirectional_attention=True", "Only causal Gemma is supported.")
        d_model = require(hf, "hidden_size", model_type)
        heads = require(hf, "num_attention_heads", model_type)
        layers = require(hf, "num_hidden_layers", model_type)
        vocab = require(hf, "vocab_size", model_type)
        fields: dict[str, Any] = dict(FIXED[model_type])
        fields.update(
            activation=activation_from_hf(hf, model_type),
            vocab_size=vocab,
            d_model=d_model,
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or d_model // heads,
            d_ff=require(hf, "intermediate_size", model_type),
            num_layers=layers,
            max_len=require(hf, "max_position_embeddings", model_type),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            attention_dropout_rate=float(hf.get("attention_dropout") or 0.0),
            tie_embeddings=is_tied(hf, tensors, "lm_head.weight", "embed_tokens.weight"),
            pad_token_id=pad_id_from_hf(hf, vocab),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            **rope_fields_from_hf(hf, model_type),
            **window_from_hf(hf, model_type, layers),
        )
        if model_type != "gemma":
            fields["query_pre_attn_scalar"] = float(require(hf, "query_pre_attn_scalar", model_type))
            if hf.get("final_logit_softcapping") is not None:
                fields["final_logit_softcap"] = float(hf["final_logit_softcapping"])
            # transformers' Gemma 3 attention ignores attn_logit_softcapping (its config keeps the key): so do we.
            if model_type == "gemma2" and hf.get("attn_logit_softcapping") is not None:
                fields["attn_logit_softcap"] = float(hf["attn_logit_softcapping"])
        if "rope_local_base" in fields and "sliding_window" not in fields:
            del fields["rope_local_base"]  # no local layer: every layer uses the global rule
        return ModelConfig(**fields)

    return config_from_hf


def whole(value: float) -> int | float:
    """An integral float as int (transformers' configs type query_pre_attn_scalar as int)."""
    return int(value) if float(value).is_integer() else value


def layer_types_of(config: ModelConfig) -> list[str]:
    return [SLIDING if w else FULL for w in config.layer_windows()]


def make_config_to_hf(model_type: str):
    def config_to_hf(config: ModelConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": [CLASSES[model_type]],
            "vocab_size": config.vocab_size,
            "hidden_size": config.d_model,
            "intermediate_size": config.d_ff,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.kv_heads,
            "head_dim": config.dim_per_head,
            "max_position_embeddings": config.max_len,
            "rms_norm_eps": config.norm_eps,
            "attention_bias": False,
            "attention_dropout": config.attention_dropout_rate,
            "initializer_range": config.initializer_range,
            "tie_word_embeddings": config.tie_embeddings,
            "pad_token_id": config.pad_token_id,
        }
        if model_type == "gemma":
            out.update(hidden_act="gelu_pytorch_tanh", rope_parameters=rope_to_hf(config))
            return out
        out.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=whole(config.query_pre_attn_scalar or config.dim_per_head),
            attn_logit_softcapping=config.attn_logit_softcap,
            final_logit_softcapping=config.final_logit_softcap,
            sliding_window=config.sliding_window,
            layer_types=layer_types_of(config),
        )
        if model_type == "gemma2":
            out["rope_parameters"] = rope_to_hf(config)
        else:
            local = config.rope_local_base if config.rope_local_base is not None else config.rotary_base
            out["rope_parameters"] = {FULL: rope_to_hf(config), SLIDING: {"rope_type": "default", "rope_theta": local}}
            out["use_bidirectional_attention"] = False
        return out

    return config_to_hf


def check_export(model_type: str):
    def check(config: ModelConfig) -> None:
        bad = []
        if config.qk_norm != (model_type == "gemma3_text"):
            bad.append(f"qk_norm={config.qk_norm}")
        if config.sandwich_norms != (model_type != "gemma"):
            bad.append(f"sandwich_norms={config.sandwich_norms}")
        if model_type == "gemma":
            for name in ("sliding_window", "attn_logit_softcap", "final_logit_softcap"):
                if getattr(config, name) is not None:
                    bad.append(f"{name}={getattr(config, name)} (Gemma has none)")
            if config.query_pre_attn_scalar not in (None, float(config.dim_per_head)):
                bad.append(f"query_pre_attn_scalar={config.query_pre_attn_scalar} (Gemma scales by head_dim)")
        if model_type != "gemma3_text" and config.rope_local_base is not None:
            bad.append("rope_local_base (only Gemma 3 has a local RoPE base)")
        if model_type == "gemma3_text" and config.attn_logit_softcap is not None:
            bad.append("attn_logit_softcap (transformers' Gemma 3 does not apply it)")
        if config.rotary_fraction != 1.0:
            bad.append(f"rotary_fraction={config.rotary_fraction}")
        if bad:
            raise cannot_export(model_type, "; ".join(bad), f"use a {model_type} preset's fields")

    return check


EXPORT_FIELDS = export_fields(
    gemma_arch.FIXED,
    (),
    free=("tie_embeddings",),  # config.json's tie_word_embeddings carries it
    plain=("qkv_bias", "embedding_norm", "final_logits_bias", "tied_logits_rescale", "scale_attention_logits"),
)


def architecture(model_type: str) -> Architecture:
    return decoder_llm(
        model_type,
        make_config_from_hf(model_type),
        make_config_to_hf(model_type),
        EXPORT_FIELDS,
        rules,
        check_export(model_type),
        ignored=(r"^layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", r"^rotary_emb(_local)?\.inv_freq$"),
    )


def model_type_for(config: ModelConfig) -> str | None:
    """The Gemma model_type a jaxformer config exports to (by its fields), or None if it is no Gemma."""
    if config.family != "decoder_only" or config.norm_scale_offset != 1.0 or not config.embed_scale:
        return None
    if config.qk_norm or config.rope_local_base is not None:
        return "gemma3_text"
    return "gemma2" if config.sandwich_norms else "gemma"


ARCHITECTURES = {name: architecture(name) for name in ("gemma", "gemma2", "gemma3_text")}
