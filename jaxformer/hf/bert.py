"""BERT (Devlin et al. 2019) and MiniLM variants <-> jaxformer encoder-only: mapping table and config fields.

HF names are those of `BertModel` (no prefix); `BertForMaskedLM`, `BertForSequenceClassification`,
`BertForQuestionAnswering` and `BertForTokenClassification` put them under "bert." and add their
heads ("cls.predictions.*", "classifier.*" on the pooled vector, "qa_outputs.*", "classifier.*" on
every token; the last two have no pooler). All weights are nn.Linear [out, in].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxformer.architectures import bert as bert_arch
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
    unsupported,
    write_keys,
)

MODEL_TYPE = "bert"
LOG = logging.getLogger(__name__)

EMBEDDINGS = [
    ("word_embeddings.weight", "embed/embedding", COPY),  # [V, D]
    ("position_embeddings.weight", "embedding/positions/embedding", COPY),  # [max_len, D]
    ("token_type_embeddings.weight", "embedding/token_types/embedding", COPY),  # [types, D]
    ("LayerNorm.weight", "embedding/norm/scale", COPY),
    ("LayerNorm.bias", "embedding/norm/bias", COPY),
]
LAYER = [  # encoder.layer.{i}. <-> encoder/layers_{i}/
    ("attention.self.query.weight", "self_attention/query_kernel", LINEAR_IN),  # [N*H, D] -> [D, N, H]
    ("attention.self.query.bias", "self_attention/query_bias", FLAT),
    ("attention.self.key.weight", "self_attention/key_kernel", LINEAR_IN),
    ("attention.self.key.bias", "self_attention/key_bias", FLAT),
    ("attention.self.value.weight", "self_attention/value_kernel", LINEAR_IN),
    ("attention.self.value.bias", "self_attention/value_bias", FLAT),
    ("attention.output.dense.weight", "self_attention/out_kernel", LINEAR_OUT),  # [D, N*H] -> [N, H, D]
    ("attention.output.dense.bias", "self_attention/out_bias", COPY),
    ("attention.output.LayerNorm.weight", "self_attention_norm/scale", COPY),
    ("attention.output.LayerNorm.bias", "self_attention_norm/bias", COPY),
    ("intermediate.dense.weight", "mlp/up_kernel", LINEAR_IN),  # [F, D] -> [D, F]
    ("intermediate.dense.bias", "mlp/up_bias", COPY),
    ("output.dense.weight", "mlp/down_kernel", LINEAR_IN),  # [D, F] -> [F, D]
    ("output.dense.bias", "mlp/down_bias", COPY),
    ("output.LayerNorm.weight", "mlp_norm/scale", COPY),
    ("output.LayerNorm.bias", "mlp_norm/bias", COPY),
]
POOLER = [("dense.weight", "dense/kernel", LINEAR_IN), ("dense.bias", "dense/bias", COPY)]
MLM_HEAD = [  # cls.predictions. <-> mlm_head/ (the decoder is tied to word_embeddings)
    ("transform.dense.weight", "transform/kernel", LINEAR_IN),
    ("transform.dense.bias", "transform/bias", COPY),
    ("transform.LayerNorm.weight", "norm/scale", COPY),
    ("transform.LayerNorm.bias", "norm/bias", COPY),
    ("bias", "bias", COPY),  # [V]
]
CLASSIFIER = [("weight", "dense/kernel", LINEAR_IN), ("bias", "dense/bias", COPY)]  # [C, D] -> [D, C]
# encoder_head -> (HF module prefix, jaxformer module, transformers class suffix)
HEADS: dict[str, tuple[str, str, str]] = {
    "none": ("", "", "Model"),
    "mlm": ("cls.predictions.", "mlm_head/", "ForMaskedLM"),
    "classification": ("classifier.", "classifier/", "ForSequenceClassification"),
    "qa": ("qa_outputs.", "qa_head/", "ForQuestionAnswering"),  # [2, D]: start, end
    "token_classification": ("classifier.", "token_classifier/", "ForTokenClassification"),
}
# BertForPreTraining's next-sentence head: no jaxformer counterpart, dropped with a warning.
NSP_HEAD = "cls.seq_relationship."


def rules(config: ModelConfig) -> list[Rule]:
    out = table("embeddings.", "", EMBEDDINGS)
    out += per_layer("encoder.layer.{i}.", "encoder/layers_{i}/", LAYER, config.num_layers)
    if config.pooler or config.encoder_head == "classification":
        out += table("pooler.", "pooler/", POOLER)
    if config.encoder_head != "none":
        hf_prefix, module, _ = HEADS[config.encoder_head]
        out += table(hf_prefix, module, MLM_HEAD if config.encoder_head == "mlm" else CLASSIFIER)
    return out


def aliases(config: ModelConfig) -> list[tuple[str, str]]:
    if config.encoder_head != "mlm":
        return []
    return [
        ("cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"),
        ("cls.predictions.decoder.bias", "cls.predictions.bias"),
    ]


def encoder_head(
    tensors: Mapping[str, np.ndarray], architectures: Sequence[str] = (), pooler: str = "pooler.dense.weight"
) -> tuple[EncoderHead, int]:
    """(encoder_head, number of classes) from the head tensors present.

    "classifier.weight" [C, D] is either head on the pooled vector (*ForSequenceClassification)
    or on every token (*ForTokenClassification): config.json's `architectures` tells, else the
    pooler does (transformers builds the token classifier without one).
    """
    if "cls.predictions.bias" in tensors:
        return "mlm", 2
    if "qa_outputs.weight" in tensors:
        return "qa", 2
    if "classifier.weight" in tensors:
        classes = int(tensors["classifier.weight"].shape[0])
        if any(str(name).endswith("ForTokenClassification") for name in architectures):
            return "token_classification", classes
        if any(str(name).endswith("ForSequenceClassification") for name in architectures):
            return "classification", classes
        return ("classification" if pooler in tensors else "token_classification"), classes
    return "none", 2


def bert_keys(model_type: str) -> tuple[Key, ...]:
    """config.json key <-> ModelConfig field of BERT's config layout (RoBERTa and XLM-R share it);
    missing keys take FIXED's value."""
    return (
        Key("vocab_size", "vocab_size", required=True),
        Key("hidden_size", "d_model", required=True),
        Key("num_attention_heads", "num_heads", required=True),
        Key("intermediate_size", "d_ff", required=True),
        Key("num_hidden_layers", "num_layers", required=True),
        Key("max_position_embeddings", "max_len", required=True),
        Key("hidden_dropout_prob", "dropout_rate", read=float),
        Key("attention_probs_dropout_prob", "attention_dropout_rate", read=float),
        activation_key("hidden_act", model_type),
        Key("type_vocab_size", "num_token_types", read=int),
        Key("layer_norm_eps", "norm_eps", read=float),
        Key("initializer_range", "initializer_range", read=float),
    )


KEYS = bert_keys(MODEL_TYPE)
DERIVED = ("pooler", "encoder_head", "num_classes")  # from the tensors present
PLAIN = ("use_bias", "scale_attention_logits", "embed_scale", "position_rule", "pooler_activation", "position_offset")
EXPORT_FIELDS = export_fields(bert_arch.FIXED, KEYS, DERIVED, PLAIN)


def config_from_hf(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> ModelConfig:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise unsupported(MODEL_TYPE, f"position_embedding_type={hf['position_embedding_type']!r}", "Only 'absolute'.")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise unsupported(MODEL_TYPE, "is_decoder/add_cross_attention=True (BERT used as a decoder)")
    dropped = sorted(name for name in tensors if name.startswith(NSP_HEAD))
    if dropped:
        LOG.warning("BERT checkpoint: dropping the next-sentence-prediction head %s (not part of jaxformer).", dropped)
    head, num_classes = encoder_head(tensors, hf.get("architectures") or ())
    pooler = "pooler.dense.weight" in tensors
    return config_from_keys(
        hf, MODEL_TYPE, bert_arch.FIXED, KEYS, DERIVED, pooler=pooler, encoder_head=head, num_classes=num_classes
    )


def check_export_extra(config: ModelConfig) -> None:
    if config.num_token_types < 1:
        raise CheckpointError(
            "cannot export to Hugging Face bert: num_token_types=0; BERT needs a token type table (>= 1)."
        )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "architectures": ["Bert" + HEADS[config.encoder_head][2]],
        **write_keys(config, KEYS),
        "position_embedding_type": "absolute",
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": True,
    }
    if config.encoder_head in ("classification", "token_classification"):
        out.update(default_labels(config.num_classes))
    return out


def rename(name: str) -> str:
    """Legacy TF-converted names: LayerNorm.gamma/beta -> LayerNorm.weight/bias."""
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


ARCHITECTURE = Architecture(
    model_type=MODEL_TYPE,
    prefix="bert.",
    head_names=("cls.", "classifier.", "qa_outputs."),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    export_fields=EXPORT_FIELDS,
    check_export_extra=check_export_extra,
    rules=rules,
    # BertModel has no prefix; the head models put the encoder under "bert.". A pooler
    # exported next to an MLM head is kept too (BertForMaskedLM ignores it; it round-trips).
    uses_prefix=lambda config: config.encoder_head != "none",
    aliases=aliases,
    ignored=(r"(^|\.)position_ids$", r"^cls\.seq_relationship\."),
    rename=rename,
)
