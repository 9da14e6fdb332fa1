"""DistilBERT <-> jaxformer encoder-only: mapping table and config fields.

HF names are those of `DistilBertModel` (no prefix); the head models put them under "distilbert.":
  DistilBertForMaskedLM              vocab_transform -> activation -> vocab_layer_norm -> tied vocab_projector + bias
  DistilBertForSequenceClassification pre_classifier -> ReLU -> dropout -> classifier on the first token,
                                     which is jaxformer's pooler (pooler_activation="relu") + classifier.
  DistilBertForQuestionAnswering      qa_outputs [2, D] on every token (start, end) <-> qa_head
  DistilBertForTokenClassification    classifier [C, D] on every token <-> token_classifier
No token types, no pooler, LayerNorm eps fixed at 1e-12. `sinusoidal_pos_embds` only initialises the
stored position table, so both kinds load as a learned table. All weights are nn.Linear [out, in].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.architectures import distilbert as distilbert_arch
from jaxformer.config import EncoderHead, ModelConfig
from jaxformer.errors import CheckpointError
from jaxformer.hf.common import (
    COPY,
    FLAT,
    LINEAR_IN,
    LINEAR_OUT,
    Architecture,
    Key,
    Rule,
    activation_key,
    config_from_keys,
    default_labels,
    export_fields,
    per_layer,
    table,
    write_keys,
)

MODEL_TYPE = "distilbert"

EMBEDDINGS = [
    ("word_embeddings.weight", "embed/embedding", COPY),  # [V, D]
    ("position_embeddings.weight", "embedding/positions/embedding", COPY),  # [max_len, D]
    ("LayerNorm.weight", "embedding/norm/scale", COPY),
    ("LayerNorm.bias", "embedding/norm/bias", COPY),
]
LAYER = [  # transformer.layer.{i}. <-> encoder/layers_{i}/
    ("attention.q_lin.weight", "self_attention/query_kernel", LINEAR_IN),  # [N*H, D] -> [D, N, H]
    ("attention.q_lin.bias", "self_attention/query_bias", FLAT),
    ("attention.k_lin.weight", "self_attention/key_kernel", LINEAR_IN),
    ("attention.k_lin.bias", "self_attention/key_bias", FLAT),
    ("attention.v_lin.weight", "self_attention/value_kernel", LINEAR_IN),
    ("attention.v_lin.bias", "self_attention/value_bias", FLAT),
    ("attention.out_lin.weight", "self_attention/out_kernel", LINEAR_OUT),  # [D, N*H] -> [N, H, D]
    ("attention.out_lin.bias", "self_attention/out_bias", COPY),
    ("sa_layer_norm.weight", "self_attention_norm/scale", COPY),
    ("sa_layer_norm.bias", "self_attention_norm/bias", COPY),
    ("ffn.lin1.weight", "mlp/up_kernel", LINEAR_IN),  # [F, D] -> [D, F]
    ("ffn.lin1.bias", "mlp/up_bias", COPY),
    ("ffn.lin2.weight", "mlp/down_kernel", LINEAR_IN),  # [D, F] -> [F, D]
    ("ffn.lin2.bias", "mlp/down_bias", COPY),
    ("output_layer_norm.weight", "mlp_norm/scale", COPY),
    ("output_layer_norm.bias", "mlp_norm/bias", COPY),
]
MLM_HEAD = [  # no prefix <-> mlm_head/ (vocab_projector.weight is tied to word_embeddings)
    ("vocab_transform.weight", "transform/kernel", LINEAR_IN),  # [D, D]
    ("vocab_transform.bias", "transform/bias", COPY),
    ("vocab_layer_norm.weight", "norm/scale", COPY),
    ("vocab_layer_norm.bias", "norm/bias", COPY),
    ("vocab_projector.bias", "bias", COPY),  # [V]
]
CLASSIFIER = [  # pre_classifier (+ ReLU) <-> pooler/, classifier <-> classifier/
    ("pre_classifier.weight", "pooler/dense/kernel", LINEAR_IN),  # [D, D]
    ("pre_classifier.bias", "pooler/dense/bias", COPY),
    ("classifier.weight", "classifier/dense/kernel", LINEAR_IN),  # [C, D] -> [D, C]
    ("classifier.bias", "classifier/dense/bias", COPY),
]
LINEAR = [("weight", "dense/kernel", LINEAR_IN), ("bias", "dense/bias", COPY)]  # [C, D] -> [D, C]
# encoder_head -> (HF module prefix, jaxformer module, table, transformers class suffix)
HEADS: dict[str, tuple[str, str, list, str]] = {
    "none": ("", "", [], "Model"),
    "mlm": ("", "mlm_head/", MLM_HEAD, "ForMaskedLM"),
    "classification": ("", "", CLASSIFIER, "ForSequenceClassification"),
    "qa": ("qa_outputs.", "qa_head/", LINEAR, "ForQuestionAnswering"),  # [2, D]: start, end
    "token_classification": ("classifier.", "token_classifier/", LINEAR, "ForTokenClassification"),
}
HEAD_NAMES = (
    "vocab_transform.",
    "vocab_layer_norm.",
    "vocab_projector.",
    "pre_classifier.",
    "classifier.",
    "qa_outputs.",
)


def rules(config: ModelConfig) -> list[Rule]:
    out = table("embeddings.", "", EMBEDDINGS)
    out += per_layer("transformer.layer.{i}.", "encoder/layers_{i}/", LAYER, config.num_layers)
    hf_prefix, module, entries, _ = HEADS[config.encoder_head]
    return out + table(hf_prefix, module, entries)


def aliases(config: ModelConfig) -> list[tuple[str, str]]:
    if config.encoder_head != "mlm":
        return []
    return [("vocab_projector.weight", "embeddings.word_embeddings.weight")]


def encoder_head(tensors: Mapping[str, np.ndarray]) -> tuple[EncoderHead, int]:
    """(encoder_head, number of classes) from the head tensors present (a pre_classifier marks sequence classification)."""
    if "vocab_projector.bias" in tensors:
        return "mlm", 2
    if "qa_outputs.weight" in tensors:
        return "qa", 2
    if "classifier.weight" in tensors:
        head: EncoderHead = "classification" if "pre_classifier.weight" in tensors else "token_classification"
        return head, int(tensors["classifier.weight"].shape[0])
    return "none", 2


KEYS = (  # config.json key <-> ModelConfig field; missing keys take FIXED's value
    Key("vocab_size", "vocab_size", required=True),
    Key("dim", "d_model", required=True),
    Key("n_heads", "num_heads", required=True),
    Key("hidden_dim", "d_ff", required=True),
    Key("n_layers", "num_layers", required=True),
    Key("max_position_embeddings", "max_len", required=True),
    Key("dropout", "dropout_rate", read=float),
    Key("attention_dropout", "attention_dropout_rate", read=float),
    activation_key("activation", MODEL_TYPE),
    Key("initializer_range", "initializer_range", read=float),
)
DERIVED = ("encoder_head", "num_classes", "pooler_activation")  # from the tensors; checked in check_export_extra
PLAIN = ("use_bias", "scale_attention_logits", "embed_scale", "position_rule", "position_offset")
EXPORT_FIELDS = export_fields(distilbert_arch.FIXED, KEYS, DERIVED, PLAIN)


def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
    head, num_classes = encoder_head(tensors)
    return config_from_keys(
        hf,
        MODEL_TYPE,
        distilbert_arch.FIXED,
        KEYS,
        DERIVED,
        encoder_head=head,
        num_classes=num_classes,
        pooler_activation=distilbert_arch.FIXED["pooler_activation"],
    )


def check_export_extra(config: ModelConfig) -> None:
    if config.encoder_head == "classification" and config.pooler_activation != "relu":
        raise CheckpointError(
            f"cannot export to Hugging Face {MODEL_TYPE}: pooler_activation={config.pooler_activation!r} with "
            "encoder_head='classification'; DistilBERT's pre_classifier applies ReLU, so use 'relu'."
        )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "architectures": ["DistilBert" + HEADS[config.encoder_head][3]],
        **write_keys(config, KEYS),
        "sinusoidal_pos_embds": False,  # the table is stored either way
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": True,
    }
    if config.encoder_head in ("classification", "token_classification"):
        out.update(default_labels(config.num_classes))
    return out


ARCHITECTURE = Architecture(
    model_type=MODEL_TYPE,
    prefix="distilbert.",
    head_names=HEAD_NAMES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    export_fields=EXPORT_FIELDS,
    check_export_extra=check_export_extra,
    rules=rules,
    uses_prefix=lambda config: config.encoder_head != "none",
    aliases=aliases,
    ignored=(r"(^|\.)position_ids$",),
)
