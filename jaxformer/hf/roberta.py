"""RoBERTa and XLM-RoBERTa <-> jaxformer encoder-only: mapping table and config fields.

The encoder's tensor names are BERT's ("embeddings.*", "encoder.layer.{i}.*", "pooler.dense.*"),
under "roberta." in the head models (XLM-RoBERTa too). Heads:
  RobertaForMaskedLM              lm_head.dense -> gelu -> lm_head.layer_norm -> tied decoder + lm_head.bias
  RobertaForSequenceClassification classifier.dense -> tanh -> classifier.out_proj on the <s> token,
                                  which is jaxformer's pooler (tanh) + classifier (no separate pooler).
  RobertaForQuestionAnswering     qa_outputs [2, D] on every token (start, end) <-> qa_head
  RobertaForTokenClassification   classifier [C, D] on every token <-> token_classifier
Positions: position_rule="padding_offset" (pads at pad_token_id, real tokens from pad_token_id + 1).
All weights are nn.Linear [out, in].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import roberta as roberta_arch
from jaxformer.config import EncoderHead, ModelConfig
from jaxformer.errors import CheckpointError
from jaxformer.hf.bert import EMBEDDINGS, LAYER, POOLER, bert_keys
from jaxformer.hf.common import (
    COPY,
    LINEAR_IN,
    Architecture,
    Key,
    Rule,
    config_from_keys,
    default_labels,
    export_fields,
    per_layer,
    table,
    unsupported,
    write_keys,
)

MODEL_TYPES = ("roberta", "xlm-roberta")
CLASS_PREFIX = {"roberta": "Roberta", "xlm-roberta": "XLMRoberta"}
MLM_HEAD = [  # lm_head. <-> mlm_head/ (the decoder is tied to word_embeddings)
    ("dense.weight", "transform/kernel", LINEAR_IN),  # [D, D]
    ("dense.bias", "transform/bias", COPY),
    ("layer_norm.weight", "norm/scale", COPY),
    ("layer_norm.bias", "norm/bias", COPY),
    ("bias", "bias", COPY),  # [V]
]
CLASSIFIER = [  # classifier. <-> pooler/ (dense + tanh on <s>) and classifier/ (out_proj)
    ("dense.weight", "pooler/dense/kernel", LINEAR_IN),  # [D, D]
    ("dense.bias", "pooler/dense/bias", COPY),
    ("out_proj.weight", "classifier/dense/kernel", LINEAR_IN),  # [C, D] -> [D, C]
    ("out_proj.bias", "classifier/dense/bias", COPY),
]
LINEAR = [("weight", "dense/kernel", LINEAR_IN), ("bias", "dense/bias", COPY)]  # [C, D] -> [D, C]
# encoder_head -> (HF module prefix, jaxformer module, table, transformers class suffix)
HEADS: dict[str, tuple[str, str, list, str]] = {
    "none": ("", "", [], "Model"),
    "mlm": ("lm_head.", "mlm_head/", MLM_HEAD, "ForMaskedLM"),
    "classification": ("classifier.", "", CLASSIFIER, "ForSequenceClassification"),
    "qa": ("qa_outputs.", "qa_head/", LINEAR, "ForQuestionAnswering"),  # [2, D]: start, end
    "token_classification": ("classifier.", "token_classifier/", LINEAR, "ForTokenClassification"),
}


def rules(config: ModelConfig) -> list[Rule]:
    out = table("embeddings.", "", EMBEDDINGS)
    out += per_layer("encoder.layer.{i}.", "encoder/layers_{i}/", LAYER, config.num_layers)
    if config.pooler and config.encoder_head != "classification":  # classification: classifier.dense is the pooler
        out += table("pooler.", "pooler/", POOLER)
    hf_prefix, module, entries, _ = HEADS[config.encoder_head]
    return out + table(hf_prefix, module, entries)


def aliases(config: ModelConfig) -> list[tuple[str, str]]:
    if config.encoder_head != "mlm":
        return []
    return [
        ("lm_head.decoder.weight", "embeddings.word_embeddings.weight"),
        ("lm_head.decoder.bias", "lm_head.bias"),
    ]


def encoder_head(tensors: Mapping[str, np.ndarray]) -> tuple[EncoderHead, int]:
    """(encoder_head, number of classes) from the head tensors present (their names tell them apart)."""
    if "lm_head.bias" in tensors or "lm_head.decoder.bias" in tensors:
        return "mlm", 2
    if "classifier.out_proj.weight" in tensors:
        return "classification", int(tensors["classifier.out_proj.weight"].shape[0])
    if "qa_outputs.weight" in tensors:
        return "qa", 2
    if "classifier.weight" in tensors:
        return "token_classification", int(tensors["classifier.weight"].shape[0])
    return "none", 2


def keys(model_type: str) -> tuple[Key, ...]:
    """config.json key <-> ModelConfig field: BERT's keys (missing keys take FIXED's value)."""
    return bert_keys(model_type)


KEYS = keys("roberta")
DERIVED = ("pooler", "encoder_head", "num_classes", "pad_token_id")  # from the tensors present / pad_token_id
PLAIN = ("use_bias", "scale_attention_logits", "embed_scale", "position_offset")
EXPORT_FIELDS = export_fields(roberta_arch.FIXED, KEYS, DERIVED, PLAIN)  # XLM_FIXED differs in vocab_size only


def fixed(model_type: str) -> dict[str, Any]:
    return roberta_arch.XLM_FIXED if model_type == "xlm-roberta" else roberta_arch.FIXED


def pad_id(hf: Mapping[str, Any], vocab_size: int, default: int) -> int:
    """config.json's pad_token_id when it is a valid id, else the family's (1): the padding offset depends on it."""
    pad = hf.get("pad_token_id")
    return pad if isinstance(pad, int) and 0 <= pad < vocab_size else default


def make_config_from_hf(model_type: str):
    def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise unsupported(
                model_type, f"position_embedding_type={hf['position_embedding_type']!r}", "Only 'absolute'."
            )
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise unsupported(model_type, "is_decoder/add_cross_attention=True (used as a decoder)")
        head, num_classes = encoder_head(tensors)
        config = config_from_keys(
            hf,
            model_type,
            fixed(model_type),
            keys(model_type),
            DERIVED,
            pooler="pooler.dense.weight" in tensors,
            encoder_head=head,
            num_classes=num_classes,
            pad_token_id=lambda fields: pad_id(hf, fields["vocab_size"], fixed(model_type)["pad_token_id"]),
        )
        if head == "mlm" and config.activation != "gelu":
            raise unsupported(
                model_type,
                f"hidden_act={hf.get('hidden_act')!r} with a masked-LM head",
                "Its lm_head always applies gelu while jaxformer's MLM head follows hidden_act; only 'gelu'.",
            )
        return config

    return config_from_hf


def check_export(model_type: str):
    def check_export_extra(config: ModelConfig) -> None:
        if config.num_token_types < 1:
            raise CheckpointError(
                f"cannot export to Hugging Face {model_type}: num_token_types=0; it needs a token type table (>= 1)."
            )
        if config.encoder_head == "mlm" and config.activation != "gelu":
            raise CheckpointError(
                f"cannot export to Hugging Face {model_type}: activation={config.activation!r} with "
                "encoder_head='mlm'; its lm_head always applies gelu, so use activation='gelu'."
            )

    return check_export_extra


def make_config_to_hf(model_type: str):
    def config_to_hf(config: ModelConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": [CLASS_PREFIX[model_type] + HEADS[config.encoder_head][3]],
            **write_keys(config, keys(model_type)),
            "position_embedding_type": "absolute",
            "pad_token_id": config.pad_token_id,
            "tie_word_embeddings": True,
        }
        if config.encoder_head in ("classification", "token_classification"):
            out.update(default_labels(config.num_classes))
        return out

    return config_to_hf


def architecture(model_type: str) -> Architecture:
    return Architecture(
        model_type=model_type,
        prefix="roberta.",
        head_names=("lm_head.", "classifier.", "qa_outputs."),
        config_from_hf=make_config_from_hf(model_type),
        config_to_hf=make_config_to_hf(model_type),
        export_fields=EXPORT_FIELDS,
        check_export_extra=check_export(model_type),
        rules=rules,
        # RobertaModel has no prefix; the head models put the encoder under "roberta.".
        uses_prefix=lambda config: config.encoder_head != "none",
        aliases=aliases,
        ignored=(r"(^|\.)position_ids$", r"(^|\.)token_type_ids$"),
    )


ARCHITECTURES = {name: architecture(name) for name in MODEL_TYPES}
