"""Import and export of Hugging Face checkpoints through the per-architecture mapping tables.

    load(path)                        HF model dir -> (model, params, ModelConfig)
    save(config, params, out_dir)     jaxformer -> config.json + model.safetensors that transformers loads
    finetune_init(path, **overrides)  (config, params) to start fine-tuning, new heads freshly initialised
    read_special_tokens(path)         bos/eos/pad/decoder_start ids for decoding

Every mismatch between a checkpoint and its config.json is an error that names
the tensors: missing, unexpected, or of the wrong shape.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxformer import models, sharding
from jaxformer.config import DEFAULT_RULES, ModelConfig
from jaxformer.errors import CheckpointError, ConfigError
from jaxformer.hf import bart, bert, distilbert, files, gemma, gpt2, hub, llama, marian, roberta, t5
from jaxformer.hf.common import Architecture, Rule, check_exportable, match_name
from jaxformer.models import finite

LOG = logging.getLogger(__name__)
ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a for a in (gpt2.ARCHITECTURE, bert.ARCHITECTURE, t5.ARCHITECTURE, marian.ARCHITECTURE)
}
ARCHITECTURES.update(llama.ARCHITECTURES)
ARCHITECTURES.update(gemma.ARCHITECTURES)
ARCHITECTURES.update(roberta.ARCHITECTURES)
ARCHITECTURES[distilbert.MODEL_TYPE] = distilbert.ARCHITECTURE
ARCHITECTURES.update(bart.ARCHITECTURES)
ARCHITECTURES.update(t5.ARCHITECTURES)  # mt5, umt5 (t5 is already in)
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
# what finetune_init may initialise afresh
HEAD_MODULES = ("lm_head", "mlm_head", "classifier", "pooler", "qa_head", "token_classifier")
STACKS = ("encoder", "decoder")


def listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{f', ... and {len(names) - limit} more' if len(names) > limit else ''}]"


# Parameter trees -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """{"encoder/layers_0/mlp/up_kernel": shape} for the unrolled parameters of `config` (nothing allocated).

    Cached per config (tracing the model takes a moment); do not mutate the result.
    """
    abstract = nn.meta.unbox(models.abstract_params(config.replace(scan_layers=False)))
    return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(abstract).items()}


def flat_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"/".join(k): v for k, v in flatten_dict(nn.meta.unbox(dict(params))).items()}


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    return unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def unscan(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned stacks (leading layers axis) -> layers_0..layers_{L-1}; unrolled params pass through."""
    params = dict(params)
    for stack in STACKS:
        if stack in params and "layers" in params[stack]:
            params[stack] = models.unstack_layer_params(params[stack])
    return params


def rescan(config: ModelConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Unrolled stacks -> the scanned layout when `config.scan_layers`."""
    if not config.scan_layers:
        return params
    counts = {"encoder": config.num_layers, "decoder": config.decoder_layers}
    if config.family == "decoder_only":
        counts["decoder"] = config.num_layers
    return {k: models.stack_layer_params(v, counts[k]) if k in STACKS else v for k, v in params.items()}


def check_table(arch: Architecture, rules: list[Rule], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """The table must fill every parameter exactly once (a bug in the table otherwise)."""
    filled = [path for rule in rules for path in rule.jax]
    unknown = sorted(set(filled) - set(shapes))
    unfilled = sorted(set(shapes) - set(filled))
    if unknown or unfilled or len(filled) != len(set(filled)):
        raise RuntimeError(f"{arch.model_type} mapping table is out of date: unknown {unknown}, unfilled {unfilled}.")


# HF tensors <-> jaxformer params --------------------------------------------------------------


def normalize_names(arch: Architecture, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Legacy renames, then the base-model prefix stripped ("transformer.h.0..." -> "h.0...")."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        key = arch.rename(name)
        if arch.prefix and key.startswith(arch.prefix):
            key = key[len(arch.prefix) :]
        if key in out:
            raise CheckpointError(
                f"checkpoint holds tensor {key!r} twice (with and without the {arch.prefix!r} prefix)."
            )
        out[key] = tensor
    return out


def resolve_aliases(arch: Architecture, config: ModelConfig, tensors: dict[str, np.ndarray]) -> None:
    """Drop tied copies (checking they are copies) or let a copy stand in for a missing original."""
    for alias, canonical in arch.aliases(config):
        if alias not in tensors:
            continue
        if canonical not in tensors:
            tensors[canonical] = tensors.pop(alias)
        elif tensors[alias].shape == tensors[canonical].shape and np.array_equal(tensors[alias], tensors[canonical]):
            del tensors[alias]
        else:
            raise CheckpointError(
                f"{alias!r} should be a tied copy of {canonical!r} but holds different values; "
                f"this {arch.model_type} checkpoint unties weights in a way jaxformer does not support."
            )


def tensors_to_params(
    arch: Architecture,
    config: ModelConfig,
    tensors: Mapping[str, np.ndarray],
    source: str,
    dtype: Any = np.float32,
    place: Callable[[str, np.ndarray], Any] | None = None,
    nonfinite: list[tuple[str, int, int]] | None = None,
) -> dict[str, Any]:
    """HF tensors (names normalised) -> nested jaxformer params (jax arrays of `dtype`).

    Tensors are converted one at a time (each read from disk only then when lazy, see
    files.stored_tensors); `place(path, array)` puts each converted array on its devices
    (default: `jnp.asarray`), after which the host copy is dropped. Given a `nonfinite` list,
    each tensor is checked for NaN/inf as it is read and (name, bad values, size) appended.
    """
    tensors = {k: v for k, v in tensors.items() if not match_name(arch.ignored, k)}
    resolve_aliases(arch, config, tensors)
    shapes = param_shapes(config)
    rules = arch.rules(config)
    check_table(arch, rules, shapes)
    expected = {rule.hf for rule in rules}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    where = f"{source} ({arch.model_type}; names shown without the {arch.prefix!r} prefix)" if arch.prefix else source
    if missing or unexpected:
        parts = ([f"missing tensors {listing(missing)}"] if missing else []) + (
            [f"unexpected tensors {listing(unexpected)}"] if unexpected else []
        )
        raise CheckpointError(
            f"checkpoint {where} does not match its config.json: {'; '.join(parts)}. "
            "Check that config.json belongs to these weights (layer counts, tie_word_embeddings, heads)."
        )
    wrong = []
    for rule in rules:
        want = rule.transform.hf_shape([shapes[p] for p in rule.jax])
        got = tuple(tensors[rule.hf].shape)
        if got != want:
            wrong.append(f"{rule.hf}: {got} vs {want}")
    if wrong:
        raise CheckpointError(
            f"checkpoint {where}: tensor shapes (file vs implied by config.json) differ: {listing(wrong, 8)}."
        )
    put = place or (lambda path, array: jnp.asarray(array))
    flat: dict[str, Any] = {}
    # Largest first: the one tensor in flight (read + converted) then sits on top of few loaded params.
    for rule in sorted(rules, key=lambda rule: -int(np.prod(tensors[rule.hf].shape))):
        stored = np.asarray(tensors[rule.hf])
        if nonfinite is not None:
            nonfinite.extend(finite.nonfinite_tensors([(arch.prefix + rule.hf, stored)]))
        arrays = rule.transform.to_jax(stored.astype(dtype, copy=False), [shapes[p] for p in rule.jax])
        del stored
        for path, array in zip(rule.jax, arrays, strict=True):
            flat[path] = put(path, array)
        del arrays
    return nested(flat)


def params_to_tensors(
    arch: Architecture, config: ModelConfig, params: Mapping[str, Any], dtype: Any = None
) -> dict[str, np.ndarray]:
    """Nested jaxformer params (unrolled) -> {HF name: array}, with the export prefix.

    dtype None keeps each parameter's own dtype (bfloat16 params -> bfloat16 tensors); else all are cast to it.
    """
    flat = flat_params(params)
    shapes = param_shapes(config)
    missing, unexpected = sorted(set(shapes) - set(flat)), sorted(set(flat) - set(shapes))
    wrong = [
        f"{p}: {tuple(np.shape(flat[p]))} vs {s}"
        for p, s in shapes.items()
        if p in flat and tuple(np.shape(flat[p])) != s
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"params do not match the config: missing {listing(missing)}, unexpected {listing(unexpected)}, "
            f"wrong shapes {listing(wrong, 8)}. Pass the params that belong to this ModelConfig."
        )
    rules = arch.rules(config)
    check_table(arch, rules, shapes)
    prefix = arch.prefix if arch.uses_prefix(config) else ""
    out = {}
    for rule in rules:
        name = rule.hf if rule.hf.startswith(arch.head_names) else prefix + rule.hf
        arrays = [np.asarray(flat[p]) for p in rule.jax]
        kinds = {a.dtype for a in arrays}
        target = dtype or (next(iter(kinds)) if len(kinds) == 1 else np.float32)
        arrays = [a.astype(target, copy=False) for a in arrays]
        out[name] = rule.transform.to_hf(arrays)
    return out


# Public API ----------------------------------------------------------------------------------


def architecture_of(hf_config: Mapping[str, Any], where: str) -> Architecture:
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        archs = hf_config.get("architectures")
        raise CheckpointError(
            f"unsupported architecture model_type={model_type!r} (architectures={archs}) in {where}; "
            f"jaxformer converts {list(SUPPORTED_MODEL_TYPES)}."
        )
    return ARCHITECTURES[model_type]


def architecture_for(config: ModelConfig) -> Architecture:
    """The HF architecture a jaxformer config exports to."""
    gemma_type = gemma.model_type_for(config)
    if gemma_type is not None:
        return ARCHITECTURES[gemma_type]
    if config.family == "decoder_only" and config.position == "rotary":  # Llama-like: pick by the fields
        if config.qk_norm:
            return ARCHITECTURES["qwen3"]
        if config.qkv_bias:
            return ARCHITECTURES["qwen2"]
        return ARCHITECTURES["mistral" if config.sliding_window is not None else "llama"]
    if config.family == "decoder_only":
        return ARCHITECTURES["gpt2"]
    if config.family == "encoder_only":  # RoBERTa by its position rule; BERT without token types is DistilBERT
        if config.position_rule == "padding_offset":
            return ARCHITECTURES["roberta"]
        return ARCHITECTURES["bert" if config.num_token_types else "distilbert"]
    if config.position == "relative":
        return ARCHITECTURES[t5.model_type_for(config)]
    if config.position == "sinusoidal":
        return ARCHITECTURES["marian"]
    if config.position == "learned":
        return ARCHITECTURES[bart.model_type_for(config)]
    raise CheckpointError(
        f"no Hugging Face architecture for an encoder_decoder with position={config.position!r}; "
        "export supports T5 (position='relative'), Marian (position='sinusoidal', layout 'concat') and BART/mBART (position='learned')."
    )


DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16, "float16": np.float16}


def load_dtype(dtype: str | None, tensors: Mapping[str, Any], where: str) -> str:
    """The parameter dtype name for `load(dtype=...)`: None -> float32; "auto" -> the checkpoint's float dtype."""
    if dtype is None:
        return "float32"
    if dtype == "auto":
        stored = sorted({np.dtype(t.dtype).name for t in tensors.values()} & set(DTYPES)) or ["float32"]
        if len(stored) > 1:
            raise CheckpointError(f"dtype='auto': {where} stores tensors as {stored}; pass one of them as dtype=.")
        return stored[0]
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}, 'auto' or None (float32).")
    return dtype


def placement(config: ModelConfig, mesh: Any, shardings: Any, rules: Any) -> Callable[[str, np.ndarray], Any] | None:
    """`place(path, array)` for tensors_to_params: each array straight into its NamedSharding.

    `jax.make_array_from_callback` copies to every device just the slice its sharding holds, so a
    device never receives (and the host never keeps) more than one converted tensor beyond its shards.
    """
    if mesh is None and shardings is None:
        return None
    if mesh is not None and shardings is not None:
        raise ValueError("pass mesh= (shardings from the logical-axis rules) or shardings=, not both.")
    if shardings is None:
        boxed = models.abstract_params(config.replace(scan_layers=False))
        shardings = sharding.param_shardings(boxed, mesh, DEFAULT_RULES if rules is None else rules)
    by_path = flat_params(shardings) if isinstance(shardings, Mapping) else None
    shapes = param_shapes(config)
    if by_path is None or set(by_path) != set(shapes):
        got = sorted(by_path or [])
        missing, extra = sorted(set(shapes) - set(got)), sorted(set(got) - set(shapes))
        raise ValueError(
            f"shardings= must be a nested dict with one jax.sharding.Sharding per parameter (unrolled layers); "
            f"missing {listing(missing)}, unexpected {listing(extra)}."
        )

    def place(path: str, array: np.ndarray) -> Any:
        return jax.make_array_from_callback(array.shape, by_path[path], lambda index: array[index])

    return place


def load(
    path: str | Path,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    dtype: str | None = None,
    mesh: Any = None,
    shardings: Any = None,
    rules: Any = None,
    allow_nonfinite: bool = False,
) -> tuple[nn.Module, dict[str, Any], ModelConfig]:
    """Read a local HF model directory, a Hub cache snapshot, or a Hub repo id ("org/name", at `revision`).

    A repo id resolves through huggingface_hub (hf/hub.py: its cache, HF_HOME, HF_HUB_OFFLINE);
    offline and not cached it raises hub.HubError naming the `hf download` command.

    Needs config.json and model.safetensors (or a sharded index); pytorch_model.bin
    only with allow_pickle=True. A tensor holding NaN/inf raises finite.NonFiniteWeightsError naming
    it (a warning instead with allow_nonfinite=True). Returns (module built with deterministic=True,
    params for `module.apply({"params": params}, ...)`, ModelConfig).

    dtype: parameter dtype, None = float32 (bfloat16 checkpoints upcast exactly), "bfloat16" /
    "float16" / "float32", or "auto" = the checkpoint's stored dtype (the config's param_dtype follows).
    mesh: a jax Mesh with ("data", "fsdp", "tensor") axes; each parameter goes straight into the
    NamedSharding its logical axes get under `rules` (default: the experiment's DEFAULT_RULES).
    shardings: instead of mesh, a nested dict of Shardings shaped like the (unrolled) params.
    Tensors are read from disk one at a time, converted, placed and dropped: with a mesh no host ever
    holds a second full copy of the weights (benchmarks/load_speed.py measures it).
    """
    directory = hub.locate(path, revision)
    hf_config = files.read_config(directory)
    arch = architecture_of(hf_config, str(directory / "config.json"))
    tensors = normalize_names(arch, files.stored_tensors(directory, allow_pickle=allow_pickle))
    config = arch.config_from_hf(hf_config, tensors)
    kind = load_dtype(dtype, tensors, str(directory))
    if kind != "float32":
        config = config.replace(param_dtype=kind)
    arch.check_ignored(config, tensors)
    place = placement(config, mesh, shardings, rules)
    nonfinite: list[tuple[str, int, int]] = []
    params = tensors_to_params(
        arch, config, tensors, str(directory), dtype=DTYPES[kind], place=place, nonfinite=nonfinite
    )
    finite.report(nonfinite, f"checkpoint {directory}", allow_nonfinite)
    return models.build(config), params, config


def save(
    config: ModelConfig,
    params: Mapping[str, Any],
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path | None = None,
    extra_config: Mapping[str, Any] | None = None,
    max_shard_size: int | str | None = None,
    dtype: str | None = None,
    model_type: str | None = None,
) -> Path:
    """Write config.json + model.safetensors (float32) that `transformers` loads; returns the directory.

    GPT-2 -> GPT2LMHeadModel; BERT -> BertModel / BertForMaskedLM / BertForSequenceClassification
    (by encoder_head; RoBERTa / DistilBERT alike, picked by position_rule / num_token_types=0);
    T5 -> T5ForConditionalGeneration; Marian -> MarianMTModel. Scanned
    params are unrolled. tokenizer_dir: its tokenizer files are copied along. extra_config:
    keys merged into config.json (e.g. {"eos_token_id": 50256}, see `read_special_tokens`).
    max_shard_size: bytes (or "5GB", "200MB") per file; larger checkpoints are written as
    model-0000X-of-0000N.safetensors + model.safetensors.index.json, as transformers does.
    dtype: None writes each parameter in its own dtype (a checkpoint loaded with dtype="auto" goes back
    in its stored dtype, bfloat16 bit for bit); "bfloat16" / "float16" / "float32" casts every tensor.
    model_type: the HF model_type to write where the fields cannot tell (e.g. "xlm-roberta", which is
    RoBERTa with another vocabulary); None picks it from the config's fields.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)} or None (the params' own).")
    if model_type is not None and model_type not in ARCHITECTURES:
        raise ValueError(f"model_type={model_type!r} is not supported; use one of {list(SUPPORTED_MODEL_TYPES)}.")
    arch = architecture_for(config) if model_type is None else ARCHITECTURES[model_type]
    check_exportable(arch, config)
    tensors = params_to_tensors(arch, config.replace(scan_layers=False), unscan(params), DTYPES.get(dtype or ""))
    stored = sorted({np.dtype(t.dtype).name for t in tensors.values()})
    hf_config = {"model_type": arch.model_type, **arch.config_to_hf(config)}
    if stored != ["float32"]:  # transformers' dtype="auto" loads in the stored dtype
        hf_config["dtype"] = stored[0] if len(stored) == 1 else "float32"
    hf_config.update(extra_config or {})
    out = Path(out_dir).expanduser()
    files.write_model(out, hf_config, tensors, max_shard_size=files.parse_size(max_shard_size))
    if tokenizer_dir is not None:
        files.copy_tokenizer_files(tokenizer_dir, out)
    return out


def init_heads(config: ModelConfig, names: list[str], seed: int) -> dict[str, Any]:
    """Fresh parameters of the head modules `names` only ("classifier", "pooler", ...), flat paths.

    Each head is initialised on its own through `model.init(method=...)`, which is
    much cheaper to compile than initialising the whole model.
    """
    model = models.build(config)
    out = {}
    for index, name in enumerate(names):
        shape = (
            (1, config.d_model) if name == "classifier" else (1, 1, config.d_model)
        )  # pooled [B, D] / hidden [B, T, D]
        variables = model.init(
            jax.random.fold_in(jax.random.PRNGKey(seed), index),
            jnp.zeros(shape, jnp.float32),
            method=lambda module, x, name=name: getattr(module, name)(x),
        )
        out.update({p: v for p, v in flat_params(variables["params"]).items() if p.split("/")[0] == name})
    return out


def finetune_init(
    path: str | Path, *, seed: int = 0, allow_pickle: bool = False, **overrides: Any
) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, params) to start fine-tuning from a HF checkpoint.

    `overrides` are ModelConfig fields (e.g. encoder_head="classification",
    num_classes=3, dropout_rate=0.1, scan_layers=True). Parameters the checkpoint
    lacks are initialised from PRNGKey(seed) -- only head modules (lm_head,
    mlm_head, classifier, pooler) may be new; heads the new config drops are left out.
    """
    _, loaded, base = load(path, allow_pickle=allow_pickle)
    config = base.replace(**overrides)
    shapes = param_shapes(config)
    old = flat_params(loaded)
    new = sorted(p for p, shape in shapes.items() if p not in old or tuple(old[p].shape) != shape)
    body = [p for p in new if p.split("/")[0] not in HEAD_MODULES]
    if body:
        raise ConfigError(
            f"overrides {sorted(overrides)} change pretrained parameters {listing(body)}; "
            "only heads may be new (encoder_head, num_classes, dropout and layout options are fine)."
        )
    fresh = init_heads(config, sorted({p.split("/")[0] for p in new}), seed)
    if new:
        LOG.info("finetune_init: freshly initialised %s", new)
    params = {p: jnp.asarray(fresh[p] if p in new else old[p]) for p in shapes}
    return config, rescan(config, nested(params))


def read_special_tokens(path: str | Path) -> dict[str, int]:
    """bos/eos/pad/decoder_start token ids from config.json and generation_config.json (which wins)."""
    directory = files.model_dir(path)
    merged = dict(files.read_config(directory))
    if (directory / "generation_config.json").is_file():
        merged.update(files.read_json(directory / "generation_config.json"))
    keys = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    return {k: merged[k] for k in keys if isinstance(merged.get(k), int)}
