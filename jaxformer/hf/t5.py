"""T5 (Raffel et al. 2020) v1.0 and v1.1 / Flan-T5, mT5 and umT5 <-> jaxformer encoder-decoder.

HF names are those of `T5ForConditionalGeneration` (`MT5...`, `UMT5...` use the same). Weights are
nn.Linear [out, in] without biases; the relative position bias table [buckets, N] lives in layer 0
of each stack and is shared by the stack's layers, as in jaxformer. umT5 holds one table in every
self-attention layer (jaxformer `relative_bias_per_layer`, `<stack>/layers_i/relative_position_bias`).

v1.0: feed_forward_proj "relu", logits from the shared table with the decoder
output scaled by d_model**-0.5. v1.1: "gated-gelu" (tanh GELU, jaxformer
"geglu_tanh") and a separate `lm_head` without that scale. HF decides the scale
from `scale_decoder_outputs` (transformers >= 5) or else `tie_word_embeddings`; mT5 never
rescales (MT5ForConditionalGeneration). Each model_type's fixed fields are
`jaxformer.architectures.t5` FIXED / MT5 / UMT5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import t5 as t5_arch
from jaxformer.config import Activation, ModelConfig
from jaxformer.hf.common import (
    COPY,
    HF_ACTIVATIONS,
    LINEAR_IN,
    LINEAR_OUT,
    Architecture,
    Key,
    Rule,
    cannot_export,
    config_from_keys,
    export_fields,
    is_tied,
    per_layer,
    table,
    unsupported,
    write_keys,
)

MODEL_TYPE = "t5"

# feed_forward_proj "gated-<act>" -> jaxformer gated activation ("gated-gelu" means HF gelu_new).
GATED_FROM_HF: dict[str, Activation] = {
    "gelu_new": "geglu_tanh",
    "gelu_fast": "geglu_tanh",
    "gelu_pytorch_tanh": "geglu_tanh",
    "gelu_python": "geglu",
    "silu": "swiglu",
    "swish": "swiglu",
    "relu": "reglu",
}
FEED_FORWARD_TO_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_new",
    "silu": "silu",
    "geglu_tanh": "gated-gelu",
    "geglu": "gated-gelu_python",
    "swiglu": "gated-silu",
    "reglu": "gated-relu",
}


def attention(hf_name: str, jax_name: str) -> list[tuple[str, str, Any]]:
    """q, k, v [N*H, D] -> [D, N, H] and o [D, N*H] -> [N, H, D] of one attention sub-layer."""
    return [
        (f"{hf_name}.q.weight", f"{jax_name}/query_kernel", LINEAR_IN),
        (f"{hf_name}.k.weight", f"{jax_name}/key_kernel", LINEAR_IN),
        (f"{hf_name}.v.weight", f"{jax_name}/value_kernel", LINEAR_IN),
        (f"{hf_name}.o.weight", f"{jax_name}/out_kernel", LINEAR_OUT),
    ]


def feed_forward(gated: bool) -> list[tuple[str, str, Any]]:
    """wi [F, D] -> up [D, F] (gated: wi_0 -> gate, activated; wi_1 -> up), wo [D, F] -> down [F, D]."""
    inputs = [("wi_0.weight", "mlp/gate_kernel", LINEAR_IN), ("wi_1.weight", "mlp/up_kernel", LINEAR_IN)]
    if not gated:
        inputs = [("wi.weight", "mlp/up_kernel", LINEAR_IN)]
    return [(f"DenseReluDense.{hf}", jax, t) for hf, jax, t in inputs] + [
        ("DenseReluDense.wo.weight", "mlp/down_kernel", LINEAR_IN)
    ]


def rules(config: ModelConfig) -> list[Rule]:
    ffn = feed_forward(config.is_gated)
    encoder_layer = [
        *attention("layer.0.SelfAttention", "self_attention"),
        ("layer.0.layer_norm.weight", "self_attention_norm/scale", COPY),
        *[(f"layer.1.{hf}", jax, t) for hf, jax, t in ffn],
        ("layer.1.layer_norm.weight", "mlp_norm/scale", COPY),
    ]
    decoder_layer = [
        *attention("layer.0.SelfAttention", "self_attention"),
        ("layer.0.layer_norm.weight", "self_attention_norm/scale", COPY),
        *attention("layer.1.EncDecAttention", "cross_attention"),
        ("layer.1.layer_norm.weight", "cross_attention_norm/scale", COPY),
        *[(f"layer.2.{hf}", jax, t) for hf, jax, t in ffn],
        ("layer.2.layer_norm.weight", "mlp_norm/scale", COPY),
    ]
    relative = "layer.0.SelfAttention.relative_attention_bias.weight"  # [buckets, N]
    stack_bias = (
        []
        if config.relative_bias_per_layer
        else [
            (f"encoder.block.0.{relative}", "encoder/relative_position_bias/embedding", COPY),
            (f"decoder.block.0.{relative}", "decoder/relative_position_bias/embedding", COPY),
        ]
    )
    if config.relative_bias_per_layer:  # umT5: every self-attention layer owns a table
        encoder_layer.append((relative, "relative_position_bias/embedding", COPY))
        decoder_layer.append((relative, "relative_position_bias/embedding", COPY))
    out = table(
        "",
        "",
        [
            ("shared.weight", "embed/embedding", COPY),  # [V, D]
            *stack_bias,
            ("encoder.final_layer_norm.weight", "encoder/final_norm/scale", COPY),
            ("decoder.final_layer_norm.weight", "decoder/final_norm/scale", COPY),
        ],
    )
    out += per_layer("encoder.block.{i}.", "encoder/layers_{i}/", encoder_layer, config.num_layers)
    out += per_layer("decoder.block.{i}.", "decoder/layers_{i}/", decoder_layer, config.decoder_layers)
    if not config.tie_embeddings:
        out.append(Rule("lm_head.weight", ("lm_head/lm_head/kernel",), LINEAR_IN))  # [V, D] -> [D, V]
    return out


def aliases(config: ModelConfig) -> list[tuple[str, str]]:
    out = [("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight")]
    return [*out, ("lm_head.weight", "shared.weight")] if config.tie_embeddings else out


def activation_from_proj(proj: str) -> Activation:
    parts = proj.split("-")
    if len(parts) == 2 and parts[0] == "gated":
        act = "gelu_new" if parts[1] == "gelu" else parts[1]
        if act in GATED_FROM_HF:
            return GATED_FROM_HF[act]
    elif len(parts) == 1 and proj in HF_ACTIVATIONS:
        return HF_ACTIVATIONS[proj]
    allowed = sorted(HF_ACTIVATIONS) + sorted(f"gated-{a}" for a in GATED_FROM_HF)
    raise unsupported(MODEL_TYPE, f"feed_forward_proj={proj!r}", f"Supported: {allowed}.")


KEYS = (  # config.json key <-> ModelConfig field; missing keys take FIXED's value
    Key("vocab_size", "vocab_size", required=True),
    Key("d_model", "d_model", required=True),
    Key("num_heads", "num_heads", required=True),
    Key("d_kv", "head_dim", required=True, write=lambda c: c.dim_per_head),
    Key("d_ff", "d_ff", required=True),
    Key("num_layers", "num_layers", required=True),
    Key(
        "num_decoder_layers",
        "num_decoder_layers",
        default=lambda got: got["num_layers"],
        write=lambda c: c.decoder_layers,
    ),
    Key("n_positions", "max_len", read=int),  # relative positions: any length; the jaxformer input limit
    Key("dropout_rate", "dropout_rate", read=float),
    Key("feed_forward_proj", "activation", read=activation_from_proj, write=lambda c: FEED_FORWARD_TO_HF[c.activation]),
    Key("layer_norm_epsilon", "norm_eps", read=float),
    Key("relative_attention_num_buckets", "relative_buckets", read=int),
    Key("relative_attention_max_distance", "relative_max_distance", read=int),
)
DERIVED = ("tie_embeddings", "tied_logits_rescale")  # from the tensors and scale_decoder_outputs
PLAIN = ("embed_scale", "embedding_norm", "final_logits_bias")


@dataclasses.dataclass(frozen=True)
class Variant:
    """What one HF model_type of the family fixes: its fields, class name, and whether it honours the rescale."""

    model_type: str
    fixed: Mapping[str, Any]  # jaxformer.architectures.t5 FIXED / MT5 / UMT5
    hf_class: str
    rescales: bool  # reads scale_decoder_outputs / tie_word_embeddings (T5, umT5); mT5 never rescales

    @property
    def export_fields(self) -> dict[str, Any]:
        plain = tuple(f for f in (*PLAIN, "relative_bias_per_layer", "hf_model_type") if f not in self.fixed)
        return export_fields(self.fixed, KEYS, (*DERIVED, "initializer_range"), plain)


VARIANTS = {
    v.model_type: v
    for v in (
        Variant("t5", t5_arch.FIXED, "T5ForConditionalGeneration", rescales=True),
        Variant("mt5", t5_arch.MT5, "MT5ForConditionalGeneration", rescales=False),
        Variant("umt5", t5_arch.UMT5, "UMT5ForConditionalGeneration", rescales=True),
    )
}
EXPORT_FIELDS = VARIANTS["t5"].export_fields


def model_type_for(config: ModelConfig) -> str:
    """The model_type a relative-position encoder-decoder exports to: umT5 by its per-layer bias, else
    `hf_model_type` when it names one of the family (mT5), else t5 (whose export check names a bad label)."""
    if config.relative_bias_per_layer:
        return "umt5"
    return config.hf_model_type if config.hf_model_type in VARIANTS else "t5"


def config_from_hf(
    hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray], variant: Variant = VARIANTS["t5"]
) -> ModelConfig:
    model_type = variant.model_type
    scale = hf.get("scale_decoder_outputs")
    if scale is None:
        scale = hf.get("tie_word_embeddings", True) is not False
    scale = bool(scale) and variant.rescales
    tied = is_tied({}, tensors, "lm_head.weight", "shared.weight")
    if scale and not tied:
        raise unsupported(
            model_type,
            "a separate lm_head.weight together with scale_decoder_outputs/tie_word_embeddings=True",
            "jaxformer rescales the decoder output only for tied logits (T5 v1.0).",
        )
    return config_from_keys(
        hf, model_type, variant.fixed, KEYS, DERIVED, tie_embeddings=tied, tied_logits_rescale=scale
    )


def config_to_hf(config: ModelConfig, variant: Variant = VARIANTS["t5"]) -> dict[str, Any]:
    scale = {"scale_decoder_outputs": config.tie_embeddings and config.tied_logits_rescale} if variant.rescales else {}
    return {
        "architectures": [variant.hf_class],
        "is_encoder_decoder": True,
        **write_keys(config, KEYS),
        "tie_word_embeddings": config.tie_embeddings,
        **scale,
        "pad_token_id": config.pad_token_id,
        "decoder_start_token_id": config.pad_token_id,
    }


def check_export_extra(config: ModelConfig, variant: Variant) -> None:
    if config.tie_embeddings and config.tied_logits_rescale and not variant.rescales:
        raise cannot_export(
            variant.model_type, "tied_logits_rescale=True (the T5 v1.0 logits scale)", "set tied_logits_rescale=False"
        )


def architecture(model_type: str) -> Architecture:
    variant = VARIANTS[model_type]
    return Architecture(
        model_type=model_type,
        prefix="",
        head_names=("lm_head.",),
        config_from_hf=lambda hf, tensors: config_from_hf(hf, tensors, variant),
        config_to_hf=lambda config: config_to_hf(config, variant),
        export_fields=variant.export_fields,
        head_dim_free=True,
        rules=rules,
        uses_prefix=lambda config: False,
        aliases=aliases,
        # Old checkpoints store an unused relative bias in the first cross-attention layer.
        ignored=(r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",),
        check_export_extra=lambda config: check_export_extra(config, variant),
    )


ARCHITECTURES = {name: architecture(name) for name in VARIANTS}
ARCHITECTURE = ARCHITECTURES["t5"]
