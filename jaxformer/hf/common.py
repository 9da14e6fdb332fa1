"""Shared machinery of the Hugging Face mapping tables: tensor transforms, rules and architectures.

A checkpoint is a flat dict {HF tensor name: array}. Each architecture module
(gpt2, bert, t5, marian) describes itself with a table of `Rule`s, one per HF
tensor: the jaxformer parameter path(s) it fills and the `Transform` between the
two layouts. The same table converts in both directions, so import and export
cannot drift apart; every transform is a transpose, reshape or split, so a round
trip reproduces the tensors bit for bit.

Layouts: PyTorch `nn.Linear` stores weight [out, in]; GPT-2's `Conv1D` stores
[in, out]; jaxformer kernels are [in, out] with heads split out, e.g. query
[D, N, H] and attention output [N, H, D] (legend: D model width, N heads, H head
size, F feed-forward width, V vocabulary).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxformer.config import Activation, ModelConfig
from jaxformer.errors import CheckpointError

Shape = tuple[int, ...]
Tensors = dict[str, np.ndarray]

# HF `hidden_act` / `activation_function` names -> jaxformer activation (plain feed-forward).
HF_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",  # the same tanh formula, written as 0.7978845608 * x * (1 + 0.044715 x^2)
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# jaxformer activation -> the HF name written on export.
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


class Transform:
    """Converts one HF tensor to the jaxformer arrays of a rule (usually one) and back."""

    def to_jax(self, tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
        raise NotImplementedError

    def to_hf(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def hf_shape(self, shapes: Sequence[Shape]) -> Shape:
        """The HF tensor shape that the jaxformer shapes imply."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Reshape(Transform):
    """HF tensor = jaxformer array, optionally transposed (2-D views), with heads merged or split.

    `layout` names the 2-D view of the jaxformer array [a0, a1, ..., ak]:
      "same"        no change at all (norm scales, embedding tables)
      "flat"        [a0 * ... * ak]                (biases [N, H] <-> [N*H])
      "row"         [1, a0 * ... * ak]             (Marian's final_logits_bias [1, V])
      "in_first"    [a0, a1 * ... * ak]            (Conv1D weight, input axis first)
      "out_last"    [a0 * ... * ak-1, ak]          (Conv1D weight of an output projection)
    With `transpose=True` the 2-D view is transposed (nn.Linear weight [out, in]).
    """

    layout: str = "same"
    transpose: bool = False

    def _view(self, shape: Shape) -> Shape:
        size = math.prod(shape)
        if self.layout == "same":
            return tuple(shape)
        if self.layout == "flat":
            return (size,)
        if self.layout == "row":
            return (1, size)
        if self.layout == "in_first":
            return (shape[0], size // shape[0])
        if self.layout == "out_last":
            return (size // shape[-1], shape[-1])
        raise ValueError(f"unknown layout {self.layout!r}")

    def hf_shape(self, shapes: Sequence[Shape]) -> Shape:
        view = self._view(shapes[0])
        return view[::-1] if self.transpose else view

    def to_jax(self, tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
        view = tensor.T if self.transpose else tensor
        return [np.ascontiguousarray(view.reshape(shapes[0]))]

    def to_hf(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        view = arrays[0].reshape(self._view(arrays[0].shape))
        return np.ascontiguousarray(view.T if self.transpose else view)


@dataclasses.dataclass(frozen=True)
class Concat(Transform):
    """One HF tensor holding several jaxformer arrays side by side on its last axis (GPT-2 c_attn: q, k, v)."""

    part: Reshape

    def hf_shape(self, shapes: Sequence[Shape]) -> Shape:
        parts = [self.part.hf_shape([shape]) for shape in shapes]
        return (*parts[0][:-1], sum(p[-1] for p in parts))

    def to_jax(self, tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
        sizes = [self.part.hf_shape([shape])[-1] for shape in shapes]
        pieces = np.split(tensor, np.cumsum(sizes)[:-1], axis=-1)
        return [self.part.to_jax(piece, [shape])[0] for piece, shape in zip(pieces, shapes, strict=True)]

    def to_hf(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([self.part.to_hf([a]) for a in arrays], axis=-1))


# (HF suffix, jaxformer suffix or suffixes, transform): one row of a mapping table.
Entry = tuple[str, str | tuple[str, ...], Transform]

COPY = Reshape("same")
FLAT = Reshape("flat")
ROW = Reshape("row")
LINEAR_IN = Reshape("in_first", transpose=True)  # nn.Linear [out, in] -> kernel [in, *out]
LINEAR_OUT = Reshape("out_last", transpose=True)  # nn.Linear [out, in] -> kernel [*in, out]
CONV1D_IN = Reshape("in_first")  # Conv1D [in, out] -> kernel [in, *out]
CONV1D_OUT = Reshape("out_last")  # Conv1D [in, out] -> kernel [*in, out]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One HF tensor <-> jaxformer parameter path(s) ("encoder/layers_0/mlp/up_kernel")."""

    hf: str
    jax: tuple[str, ...]
    transform: Transform


def table(hf_prefix: str, jax_prefix: str, entries: Sequence[Entry]) -> list[Rule]:
    """Rules from (hf suffix, jax suffix or suffixes, transform) entries under common prefixes."""
    rules = []
    for hf, jax_paths, transform in entries:
        paths = (jax_paths,) if isinstance(jax_paths, str) else jax_paths
        rules.append(Rule(hf_prefix + hf, tuple(jax_prefix + p for p in paths), transform))
    return rules


def per_layer(hf_prefix: str, jax_prefix: str, entries: Sequence[Entry], layers: int) -> list[Rule]:
    """`table` repeated for layers 0..layers-1; "{i}" in the prefixes is the layer index."""
    out: list[Rule] = []
    for i in range(layers):
        out.extend(table(hf_prefix.format(i=i), jax_prefix.format(i=i), entries))
    return out


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the converter needs to know about one HF `model_type`.

    prefix: the base-model prefix of head-model checkpoints ("transformer." in
    GPT2LMHeadModel). Table names are written without it; on import it is
    stripped, on export `uses_prefix(config)` decides whether to add it.
    head_names: prefixes of tensors that never carry `prefix` (lm_head, cls., ...).
    ignored: regexes of non-parameter buffers that checkpoints may contain.
    aliases(config): (alias, canonical) pairs of tied copies; an alias must equal its
    canonical tensor and is dropped (or stands in for it when it is missing).
    check_ignored(config, tensors): validates ignored buffers that carry meaning
    (Marian's stored sinusoid tables) and raises if they disagree with the config.
    rename(name): maps legacy tensor names (BERT's LayerNorm.gamma/beta).
    """

    model_type: str
    prefix: str
    head_names: tuple[str, ...]
    config_from_hf: Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    export_fields: Mapping[str, Any]  # ModelConfig values the HF architecture can represent (export checks them)
    rules: Callable[[ModelConfig], list[Rule]]
    uses_prefix: Callable[[ModelConfig], bool]
    aliases: Callable[[ModelConfig], list[tuple[str, str]]] = lambda config: []
    ignored: tuple[str, ...] = ()
    check_ignored: Callable[[ModelConfig, Mapping[str, np.ndarray]], None] = lambda config, tensors: None
    rename: Callable[[str], str] = lambda name: name
    head_dim_free: bool = False  # True when the HF config stores head_dim itself (T5's d_kv)
    check_export_extra: Callable[[ModelConfig], None] = lambda config: None
    grouped_query: bool = False  # True when the HF config stores num_key_value_heads (Llama family)


# Config helpers ------------------------------------------------------------------------------


def unsupported(model_type: str, problem: str, fix: str = "") -> CheckpointError:
    """The error for a checkpoint feature jaxformer cannot represent."""
    hint = f" {fix}" if fix else ""
    return CheckpointError(f"unsupported {model_type} checkpoint: {problem}.{hint}")


def require(hf: Mapping[str, Any], key: str, model_type: str) -> Any:
    if key not in hf or hf[key] is None:
        raise CheckpointError(
            f"config.json of this {model_type} checkpoint has no {key!r}; it is needed to build the model."
        )
    return hf[key]


def activation_from_hf(name: str, model_type: str, field: str) -> Activation:
    if name not in HF_ACTIVATIONS:
        raise unsupported(model_type, f"{field}={name!r}", f"Supported: {sorted(HF_ACTIVATIONS)}.")
    return HF_ACTIVATIONS[name]


def activation_to_hf(config: ModelConfig, model_type: str) -> str:
    if config.activation not in ACTIVATIONS_TO_HF:
        raise cannot_export(model_type, f"activation={config.activation!r}", f"use one of {sorted(ACTIVATIONS_TO_HF)}")
    return ACTIVATIONS_TO_HF[config.activation]


def pad_id_from_hf(hf: Mapping[str, Any], vocab_size: int) -> int:
    """HF pad_token_id when it is a valid id, else jaxformer's default 0 (GPT-2 has none)."""
    pad = hf.get("pad_token_id")
    return pad if isinstance(pad, int) and 0 <= pad < vocab_size else 0


def is_tied(hf: Mapping[str, Any], tensors: Mapping[str, np.ndarray], head: str, table_name: str) -> bool:
    """Whether the output projection `head` is the embedding `table_name` (HF's rule).

    Tied when the config says so, unless the checkpoint holds a different `head`
    tensor (transformers then keeps them apart as well).
    """
    if not hf.get("tie_word_embeddings", True):
        return False
    if head in tensors and table_name in tensors:
        return tensors[head].shape == tensors[table_name].shape and np.array_equal(tensors[head], tensors[table_name])
    return True


def cannot_export(model_type: str, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(
        f"cannot export to Hugging Face {model_type}: {problem} has no {model_type} equivalent; {fix}."
    )


def check_fields(config: ModelConfig, model_type: str, wanted: Mapping[str, Any], grouped_query: bool = False) -> None:
    """Raise naming every ModelConfig field whose value the HF architecture cannot represent."""
    bad = [f"{k}={getattr(config, k)!r} (needs {v!r})" for k, v in wanted.items() if getattr(config, k) != v]
    if config.kv_heads != config.num_heads and not grouped_query:
        bad.append(f"num_kv_heads={config.num_kv_heads!r} (needs {config.num_heads}: no grouped-query attention)")
    if bad:
        raise CheckpointError(f"cannot export to Hugging Face {model_type}: " + "; ".join(bad) + ".")


def check_exportable(arch: Architecture, config: ModelConfig) -> None:
    """Raise (one line) when `config` has no equivalent in `arch`'s Hugging Face architecture."""
    check_fields(config, arch.model_type, arch.export_fields, arch.grouped_query)
    if not arch.head_dim_free:
        check_head_dim(config, arch.model_type)
        activation_to_hf(config, arch.model_type)
    arch.check_export_extra(config)


def check_head_dim(config: ModelConfig, model_type: str) -> None:
    if config.num_heads * config.dim_per_head != config.d_model:
        raise cannot_export(
            model_type,
            f"head_dim={config.head_dim} with num_heads * head_dim != d_model={config.d_model}",
            "unset head_dim",
        )


def match_name(patterns: Sequence[str], name: str) -> bool:
    return any(re.search(p, name) for p in patterns)


# Architecture facts once -----------------------------------------------------------------------
# An hf/<family>.py states its config translation as data: the architecture module's FIXED (the
# fields every model of the family shares, also used by its presets) plus a table of `Key`s, one
# per HF config.json key it reads. `read_keys` builds ModelConfig fields from a config.json and
# `write_keys` writes them back from the same table, so import and export cannot drift apart.

_MODEL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class Key:
    """One HF config.json key <-> one ModelConfig field.

    A missing (or null) key takes `default` (a jaxformer value, or a function of the fields read
    so far), else the family's FIXED value of `field`, else ModelConfig's own default; with
    `required=True` it is an error instead. `read` turns a present HF value into the field value,
    `write(config)` the other way (default: the field itself). `twins` are further HF keys that
    hold the same value (Marian's encoder_*/decoder_* pairs): checked on import, written on export.
    """

    hf: str
    field: str
    required: bool = False
    default: Any = None
    read: Callable[[Any], Any] = _same
    write: Callable[[ModelConfig], Any] | None = None
    twins: tuple[str, ...] = ()

    def default_value(self, fixed: Mapping[str, Any], got: Mapping[str, Any]) -> Any:
        if callable(self.default):
            return self.default(got)
        if self.default is not None:
            return self.default
        return fixed.get(self.field, _MODEL_DEFAULTS[self.field])

    def value_of(self, config: ModelConfig) -> Any:
        return self.write(config) if self.write is not None else getattr(config, self.field)


def read_keys(hf: Mapping[str, Any], keys: Sequence[Key], fixed: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """ModelConfig fields {field: value} from config.json `hf`, one per `Key` (in table order)."""
    got: dict[str, Any] = {}
    for key in keys:
        raw = hf.get(key.hf)
        if raw is None and key.required:
            require(hf, key.hf, model_type)
        got[key.field] = key.default_value(fixed, got) if raw is None else key.read(raw)
        for twin in key.twins:
            if hf.get(twin) is not None and hf[twin] != raw:
                raise unsupported(
                    model_type, f"{twin}={hf[twin]} differs from {key.hf}={raw}", "jaxformer uses one value."
                )
    return got


def write_keys(config: ModelConfig, keys: Sequence[Key]) -> dict[str, Any]:
    """config.json entries {HF key: value} of `config`, one per `Key` and twin (the inverse of `read_keys`)."""
    out: dict[str, Any] = {}
    for key in keys:
        value = key.value_of(config)
        out.update({name: value for name in (key.hf, *key.twins)})
    return out


def activation_key(hf_key: str, model_type: str, default: Any = None) -> Key:
    """The Key of a plain feed-forward activation named with HF's names (hidden_act, activation_function)."""
    return Key(
        hf_key,
        "activation",
        default=default,
        read=lambda name: activation_from_hf(name, model_type, hf_key),
        write=lambda config: activation_to_hf(config, model_type),
    )


def config_from_keys(
    hf: Mapping[str, Any],
    model_type: str,
    fixed: Mapping[str, Any],
    keys: Sequence[Key],
    derived: Sequence[str] = (),
    **given: Any,
) -> ModelConfig:
    """The ModelConfig of config.json `hf`: FIXED, the fields `keys` read, HF's pad id, then `given`
    (the `derived` fields, decided by the tensors; a callable receives the fields read so far)."""
    fields = {**fixed_fields(fixed, keys, derived), **read_keys(hf, keys, fixed, model_type)}
    fields["pad_token_id"] = pad_id_from_hf(hf, fields["vocab_size"])
    for name, value in given.items():
        fields[name] = value(fields) if callable(value) else value
    return ModelConfig(**fields)


def fixed_fields(fixed: Mapping[str, Any], keys: Sequence[Key], derived: Sequence[str] = ()) -> dict[str, Any]:
    """The FIXED fields that no config.json key and no tensor decides: set on import, required on export."""
    read = {key.field for key in keys} | set(derived)
    return {name: value for name, value in fixed.items() if name not in read}


def export_fields(
    fixed: Mapping[str, Any], keys: Sequence[Key], free: Sequence[str] = (), plain: Sequence[str] = ()
) -> dict[str, Any]:
    """What export checks: the FIXED fields that no key carries and that are not `free` (decided by
    the tensors, or with no HF counterpart to check), plus `plain` fields that must keep ModelConfig's
    default (features the HF architecture lacks, e.g. embed_scale for GPT-2)."""
    return {**fixed_fields(fixed, keys, free), **{name: _MODEL_DEFAULTS[name] for name in plain}}


def default_labels(num_classes: int) -> dict[str, dict]:
    """transformers' placeholder label names for a classifier config: {"id2label": ..., "label2id": ...}."""
    names = [f"LABEL_{i}" for i in range(num_classes)]
    return {"id2label": {str(i): name for i, name in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}
