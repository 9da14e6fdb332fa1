"""BART and mBART (model types "bart", "mbart") <-> jaxformer encoder-decoder.

HF names are those of `BartModel` / `MBartModel` (the "model." prefix of the head models stripped).
The blocks are Marian's (`jaxformer.hf.marian` tables); on top of them each stack has its own learned
position table `embed_positions` [max_position_embeddings + 2, D] (jaxformer `position_offset=2`) and a
`layernorm_embedding`; mBART adds a final `layer_norm` per stack (jaxformer pre-norm `final_norm`).
Heads: `*ForConditionalGeneration` (tied `lm_head` + `final_logits_bias` [1, V]),
`*ForSequenceClassification` (`classification_head.dense` -> tanh -> `out_proj` on the decoder state
at the last eos: jaxformer `encoder_head="classification"`, `classifier_token_id` = eos), or none (`*Model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import bart as bart_arch
from jaxformer.config import ModelConfig
from jaxformer.hf.common import (
    COPY,
    LINEAR_IN,
    ROW,
    Architecture,
    Key,
    Rule,
    activation_key,
    config_from_keys,
    default_labels,
    export_fields,
    is_tied,
    per_layer,
    table,
    unsupported,
    write_keys,
)
from jaxformer.hf.marian import DECODER_LAYER, ENCODER_LAYER, norm

FIXED: dict[str, dict] = {"bart": bart_arch.FIXED, "mbart": bart_arch.MBART_FIXED}
CLASSES = {"bart": "Bart", "mbart": "MBart"}  # transformers class-name stem
HEAD_CLASSES = {"lm": "ForConditionalGeneration", "classification": "ForSequenceClassification", "none": "Model"}
CLASSIFIER = [
    ("dense.weight", "pooler/dense/kernel", LINEAR_IN),  # [D, D] -> [D, D] transposed
    ("dense.bias", "pooler/dense/bias", COPY),
    ("out_proj.weight", "classifier/dense/kernel", LINEAR_IN),  # [C, D] -> [D, C]
    ("out_proj.bias", "classifier/dense/bias", COPY),
]


def model_type_for(config: ModelConfig) -> str:
    """ "mbart" for the pre-norm variant (final norms), else "bart"."""
    return "mbart" if config.norm_position == "pre" else "bart"


def head_kind(config: ModelConfig) -> str:
    if config.encoder_head == "classification":
        return "classification"
    return "lm" if config.final_logits_bias or not config.tie_embeddings else "none"


def rules(config: ModelConfig) -> list[Rule]:
    out = table("", "", [("shared.weight", "embed/embedding", COPY)])  # [V, D]
    for hf_stack, jax_embedding in (("encoder", "source_embedding"), ("decoder", "target_embedding")):
        entries = [("embed_positions.weight", "positions/embedding", COPY), *norm("layernorm_embedding", "norm")]
        out += table(f"{hf_stack}.", f"{jax_embedding}/", entries)  # positions [max_len + 2, D]
        if config.norm_position == "pre":
            out += table(f"{hf_stack}.", f"{hf_stack}/", norm("layer_norm", "final_norm"))
    out += per_layer("encoder.layers.{i}.", "encoder/layers_{i}/", ENCODER_LAYER, config.num_layers)
    out += per_layer("decoder.layers.{i}.", "decoder/layers_{i}/", DECODER_LAYER, config.decoder_layers)
    if config.encoder_head == "classification":
        return out + table("classification_head.", "", CLASSIFIER)
    if config.final_logits_bias:
        out.append(Rule("final_logits_bias", ("lm_head/final_logits_bias",), ROW))  # [1, V] -> [V]
    if not config.tie_embeddings:
        out.append(Rule("lm_head.weight", ("lm_head/lm_head/kernel",), LINEAR_IN))  # [V, D] -> [D, V]
    return out


def aliases(config: ModelConfig) -> list[tuple[str, str]]:
    out = [("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight")]
    if config.tie_embeddings and config.encoder_head != "classification":
        out.append(("lm_head.weight", "shared.weight"))
    return out


def keys(model_type: str) -> tuple[Key, ...]:
    """config.json key <-> ModelConfig field; missing keys take FIXED's (else ModelConfig's) value."""
    return (
        Key("vocab_size", "vocab_size", required=True),
        Key("d_model", "d_model", required=True),
        Key("encoder_attention_heads", "num_heads", required=True, twins=("decoder_attention_heads",)),
        Key("encoder_ffn_dim", "d_ff", required=True, twins=("decoder_ffn_dim",)),
        Key("encoder_layers", "num_layers", required=True),
        Key("decoder_layers", "num_decoder_layers", required=True, write=lambda c: c.decoder_layers),
        Key("max_position_embeddings", "max_len", required=True),
        Key("dropout", "dropout_rate", read=float),
        Key("attention_dropout", "attention_dropout_rate", read=float),
        activation_key("activation_function", model_type, default="gelu"),
        Key("init_std", "initializer_range", read=float),
        Key("scale_embedding", "embed_scale", read=bool),
        Key("tie_word_embeddings", "tie_embeddings", read=bool),  # on import decided with the tensors (is_tied)
    )


DERIVED = ("tie_embeddings", "final_logits_bias", "encoder_head", "num_classes", "classifier_token_id")
PLAIN = (  # features BART has no counterpart for: they must keep ModelConfig's default on export
    "scale_attention_logits",
    "tied_logits_rescale",
    "pooler",
    "qk_norm",
    "sandwich_norms",
    "attn_logit_softcap",
    "final_logit_softcap",
    "query_pre_attn_scalar",
)


def config_from_hf_for(model_type: str) -> Any:
    def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
        if hf.get("add_final_layer_norm") is not None or hf.get("normalize_before") is not None:
            raise unsupported(model_type, "normalize_before / add_final_layer_norm options")
        classes = tensors.get("classification_head.out_proj.weight")
        head: dict[str, Any] = dict(encoder_head="none")
        if classes is not None:
            eos = hf.get("eos_token_id", 2)
            if not isinstance(eos, int):
                raise unsupported(model_type, f"eos_token_id={eos!r} with a classification head", "Use one eos id.")
            head = dict(encoder_head="classification", num_classes=int(classes.shape[0]), classifier_token_id=eos)
        return config_from_keys(
            hf,
            model_type,
            FIXED[model_type],
            keys(model_type),
            DERIVED,
            tie_embeddings=lambda fields: is_tied(hf, tensors, "lm_head.weight", "shared.weight"),
            final_logits_bias="final_logits_bias" in tensors,
            **head,
        )

    return config_from_hf


def config_to_hf_for(model_type: str) -> Any:
    def config_to_hf(config: ModelConfig) -> dict[str, Any]:
        out = {
            "architectures": [CLASSES[model_type] + HEAD_CLASSES[head_kind(config)]],
            "is_encoder_decoder": True,
            **write_keys(config, keys(model_type)),
            "activation_dropout": 0.0,
            "pad_token_id": config.pad_token_id,
        }
        if config.encoder_head == "classification":
            out["eos_token_id"] = config.classifier_token_id
            out.update(default_labels(config.num_classes))
        return out

    return config_to_hf


def architecture(model_type: str) -> Architecture:
    return Architecture(
        model_type=model_type,
        prefix="model.",
        head_names=("lm_head.", "final_logits_bias", "classification_head."),
        config_from_hf=config_from_hf_for(model_type),
        config_to_hf=config_to_hf_for(model_type),
        export_fields=export_fields(FIXED[model_type], keys(model_type), DERIVED, PLAIN),
        rules=rules,
        uses_prefix=lambda config: head_kind(config) != "none",
        aliases=aliases,
    )


ARCHITECTURES = {name: architecture(name) for name in FIXED}
