"""Experiment configuration: `ml_collections` files in, typed frozen configs out.

An experiment file defines `get_config() -> ConfigDict`, usually `base_config()` plus
a few changes. `load(path, overrides)` reads it and applies `--config.a.b=value`
overrides (parsed and set; an unknown key is rejected with the nearest valid one) and
`validate` turns it into an `Experiment` of frozen dataclasses. Building those
(`to_dataclass`: the declared types, then each dataclass's own checks) is the one place a
value is checked, so every later stage receives checked, typed values.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import traceback
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import ml_collections

from jaxformer import presets
from jaxformer.config import (
    DEFAULT_RULES,
    CheckpointConfig,
    ConfigError,
    LoraConfig,
    MeshConfig,
    ModelConfig,
    Parallelism,
    TrainConfig,
    check_choice,
    suggest,
)
from jaxformer.config.backend import check_backend
from jaxformer.data.batching import TASK_OF_FAMILY
from jaxformer.data.config import HEAD_TASKS, DataConfig


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything one run needs, validated."""

    seed: int
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    checkpoint: CheckpointConfig
    mesh: MeshConfig
    parallelism: Parallelism
    logical_axis_rules: tuple[tuple[str, Any], ...]
    preset: str
    raw: dict[str, Any]  # the config as loaded, for the workdir's config.json
    init_from: str | None = None  # model.init_from: a HF directory, a Hub repo id or a jaxformer workdir
    init_revision: str | None = None  # model.init_revision: the Hub revision of a repo id
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # model.* keys set (with init_from)
    lora: LoraConfig | None = None  # lora.rank > 0: low-rank adapters on the frozen model
    tokenizer_from_init: bool = False  # the init_from checkpoint's tokenizer is the run's (hf/finetune.py sets it)
    lora_init_adapter: str | None = None  # lora.init_adapter: a PEFT adapter directory the adapters start from


def base_config() -> ml_collections.ConfigDict:
    """Every key an experiment may set, with its default. Experiments start from this."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds parameters, dropout and data order
    # + any ModelConfig field. init_from: start from a checkpoint (HF dir, Hub repo id, jaxformer workdir) whose
    # architecture replaces the preset's; model.* keys then override it (shape-changing ones are refused).
    config.model = ml_collections.ConfigDict(
        {"preset": "tiny-transformer", "init_from": "", "init_revision": ""}  # "": unset
    )
    config.data = ml_collections.ConfigDict(dataclasses.asdict(DataConfig()))
    config.train = ml_collections.ConfigDict(dataclasses.asdict(TrainConfig()))
    config.checkpoint = ml_collections.ConfigDict(dataclasses.asdict(CheckpointConfig()))
    config.mesh = ml_collections.ConfigDict(dataclasses.asdict(MeshConfig()))
    # LoRA (config/lora.py): rank 0 = off; else only adapters train, checkpoints hold them and a base reference.
    lora = LoraConfig()
    config.lora = ml_collections.ConfigDict(
        {
            "rank": 0,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "targets": list(lora.targets),
            "train_modules": list(lora.train_modules),
            "init_adapter": "",
        }
    )
    config.parallelism = "jit"  # "jit" (sharded by the mesh and the rules) or "pmap" (data parallel)
    config.logical_axis_rules = [list(rule) for rule in DEFAULT_RULES]
    return config


# Loading -----------------------------------------------------------------


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Run `get_config()` of the experiment file at `path`, then apply `a.b=value` overrides."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"--config {str(path)!r} is a directory; give an experiment file such as experiments/default.py "
            "(a run's directory goes to --workdir)."
        )
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} not found; experiments live in experiments/*.py.")
    spec = importlib.util.spec_from_file_location(f"jaxformer_experiment_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import experiment file {str(path)!r}.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"experiment file {str(path)!r} has no get_config() function.")
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as err:  # the user's file failed: say where, in one line
        raise ConfigError(_describe_failure(path, err)) from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {str(path)!r} returned {type(config).__name__}; it must return an "
            "ml_collections.ConfigDict (start from jaxformer.experiment.base_config())."
        )
    for item in overrides:
        apply_override(config, item)
    return config


def _describe_failure(path: Path, err: Exception) -> str:
    """`experiment file 'x.py' line 3: NameError: ...` for an exception raised while running the file."""
    if isinstance(err, SyntaxError):
        return f"experiment file {str(path)!r} line {err.lineno}: {err.msg}."
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if Path(frame.filename) == path]
    where = f" line {lines[-1]}" if lines else ""
    return (
        f"experiment file {str(path)!r}{where}: {type(err).__name__}: {_message(err)} "
        "(set JAXFORMER_DEBUG=1 for the traceback)."
    )


def _message(err: BaseException) -> str:
    """An exception's text on one line (unwrapping ConfigDict's AttributeError(KeyError(...)))."""
    inner = err.args[0] if len(err.args) == 1 else None
    if isinstance(inner, BaseException):
        return _message(inner)
    text = inner if isinstance(err, KeyError) and isinstance(inner, str) else str(err)
    return " ".join(text.split())


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, f"{full}."))
    return keys


def _unknown_key(key: str, candidates: list[str] | tuple[str, ...], prefix: str = "") -> ConfigError:
    """The error for unknown key `prefix+key`: the nearest valid key, else the valid keys of its section."""
    hint = suggest(key, candidates, prefix, cutoff=0.5)
    if not hint:
        section = sorted({c for c in candidates if "." not in c})
        where = f"in {prefix[:-1]!r}" if prefix else "at the top level"
        hint = f" Valid keys {where}: {', '.join(section)}."
    return ConfigError(f"unknown config key {prefix + key!r}.{hint}")


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
    """Apply one `a.b.c=value` override: parse the value and set it. `model.*` keys may name any ModelConfig field.

    Only the key is checked here (it must exist, and name a value, not a section); the value is
    checked once, where `validate` builds the typed configs (`to_dataclass`).
    """
    item = item[len("--config.") :] if item.startswith("--config.") else item
    if "=" not in item:
        raise ConfigError(f"--config.{item} has no value; write --config.{item}=VALUE.")
    key, text = item.split("=", 1)
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override --config.{item} has an empty key; write --config.section.key=VALUE.")
    node = config
    for depth, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            section = ".".join(parts[:depth])
            prefix = f"{section}." if section else ""
            raise _unknown_key(".".join(parts[depth:]), _flat_keys(node), prefix)
        node = node[part]
    leaf = parts[-1]
    model_field = parts[0] == "model" and len(parts) == 2 and (leaf in _model_fields() or leaf in MODEL_SOURCE_KEYS)
    if leaf not in node and not model_field:
        prefix = ".".join(parts[:-1]) + "." if len(parts) > 1 else ""
        candidates = list(node.keys()) + (list(_model_fields()) if parts[0] == "model" and len(parts) == 2 else [])
        raise _unknown_key(leaf, candidates, prefix)
    if isinstance(node.get(leaf), ml_collections.ConfigDict):
        raise ConfigError(f"config key {key!r} is a section, not a value; set its keys: --config.{key}.KEY=VALUE.")
    with node.unlocked(), node.ignore_type():  # the type is checked once, by `validate`
        node[leaf] = _parse_value(text)


MODEL_SOURCE_KEYS = ("init_from", "init_revision")  # model.* keys that are not ModelConfig fields


def _model_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModelConfig))


# Validation --------------------------------------------------------------


def _choice(field: str, value: Any, literal: Any) -> None:
    try:
        check_choice(field, value, literal)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def to_dataclass(cls: type, values: dict[str, Any], section: str, base: Any = None) -> Any:
    """Build frozen dataclass `cls` from `values` (or `base.replace(**values)`): the one place a config
    value is checked. Keys and types against `cls`'s hints here, then the dataclass's own validation;
    any problem is a ConfigError naming `section.key`."""
    fields = tuple(f.name for f in dataclasses.fields(cls))
    hints = get_type_hints(cls)
    typed = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(key, fields, f"{section}.")
        _check_type(f"{section}.{key}", value, hints[key])
        typed[key] = _as_hinted(value, hints[key])
    try:
        return cls(**typed) if base is None else base.replace(**typed)
    except (ValueError, TypeError) as err:  # ConfigError too: the dataclass names `key`, we add its section
        raise ConfigError(_qualify(section, str(err), fields)) from None


def _as_hinted(value: Any, hint: Any) -> Any:
    """A checked value in the hint's own type: an int where a float is declared becomes a float, a
    list where a tuple is declared a tuple (JSON and command lines have no tuples)."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    if float in options and isinstance(value, int) and not isinstance(value, bool) and int not in options:
        return float(value)
    if isinstance(value, list) and any(o is tuple or get_origin(o) is tuple for o in options):
        return tuple(value)
    return value


def _qualify(section: str, message: str, fields: tuple[str, ...]) -> str:
    """Name keys in full: "d_model=5 is ..." -> "model.d_model=5 is ..."; other messages get a `section: ` prefix."""
    if message.startswith(f"{section}.") or message.startswith(f"{section}:"):
        return message
    match = re.match(r"(\w+)=", message)
    if match and match.group(1) in fields:
        return f"{section}.{message}"
    return f"{section}: {message}"


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise ConfigError unless `value` fits the type hint (Literal, Optional/Union, tuple[...], list[...], plain)."""
    origin = get_origin(hint)
    if origin is Literal:
        _choice(name, value, hint)
        return
    if value is None:
        if hint is Any or (origin in (Union, types.UnionType) and type(None) in get_args(hint)):
            return
        raise ConfigError(f"config key {name!r} may not be None.")
    if origin in (Union, types.UnionType):
        errors = []
        for option in (o for o in get_args(hint) if o is not type(None)):
            try:
                _check_type(name, value, option)
                return
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin in (tuple, list):
        _check_sequence(name, value, origin, get_args(hint))
        return
    if not isinstance(hint, type):  # Any, type variables: nothing to check
        return
    _check_plain(name, value, hint)


def _check_sequence(name: str, value: Any, origin: type, args: tuple[Any, ...]) -> None:
    """`tuple[int, ...]`, `tuple[int, str]` or `list[str]`: a list or tuple whose items fit."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"config key {name!r} expects a {origin.__name__} such as [8, 16], got {value!r} ({type(value).__name__})."
        )
    homogeneous = origin is list or (len(args) == 2 and args[1] is Ellipsis)
    if not homogeneous and args and len(args) != len(value):
        raise ConfigError(f"config key {name!r} expects {len(args)} items, got {len(value)}: {value!r}.")
    for index, item in enumerate(value):
        item_hint = (args[0] if args else Any) if homogeneous else args[index]
        _check_type(f"{name}[{index}]", item, item_hint)


def _check_plain(name: str, value: Any, want: type) -> None:
    """int (not bool), float (int accepted), bool, str, bare tuple/list (either accepted), other classes."""
    if want in (tuple, list):
        ok = isinstance(value, (list, tuple))
    elif want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, want)
    if not ok:
        raise ConfigError(f"config key {name!r} expects {want.__name__}, got {value!r} ({type(value).__name__}).")


def validate(config: ml_collections.ConfigDict) -> Experiment:
    """Turn a loaded ConfigDict into a checked `Experiment` (raises ConfigError with one clear line)."""
    raw = config.to_dict()
    top = tuple(base_config().keys())
    for key in raw:
        if key not in top:
            raise _unknown_key(key, top)
    model_values = dict(raw.get("model", {}))
    preset = model_values.pop("preset", None)
    init_from, init_revision = _init_from(model_values)
    if not isinstance(preset, str):
        raise ConfigError(f"model.preset must name a preset, got {preset!r}; available: {presets.names()}")
    if preset not in presets.names():
        raise ConfigError(
            f"unknown model.preset {preset!r}.{suggest(preset, presets.names(), cutoff=0.5)} Available: {presets.names()}"
        )
    overrides: dict[str, Any] = {}
    if init_from is None:
        model = to_dataclass(ModelConfig, model_values, "model", base=presets.get(preset))
        check_backend(model)
    else:  # the checkpoint's config replaces the preset (hf/finetune.py); the keys are only type-checked here
        model = presets.get(preset)
        overrides = _typed_overrides(model_values)
    data_values = dict(raw.get("data", {}))
    tokenizer_from_init = init_from is not None and _tokenizer_unset(data_values)
    if tokenizer_from_init:  # a placeholder any source accepts; the checkpoint's tokenizer replaces it
        data_values["tokenizer"] = "byte"
    data = to_dataclass(DataConfig, data_values, "data")
    train = to_dataclass(TrainConfig, dict(raw.get("train", {})), "train")
    checkpoint = to_dataclass(CheckpointConfig, dict(raw.get("checkpoint", {})), "checkpoint")
    mesh = to_dataclass(MeshConfig, dict(raw.get("mesh", {})), "mesh")
    parallelism = raw.get("parallelism", "jit")
    _choice("parallelism", parallelism, Parallelism)
    seed = raw.get("seed", 0)
    _check_type("seed", seed, int)
    rules = _rules(raw.get("logical_axis_rules", DEFAULT_RULES))
    lora_values = dict(raw.get("lora", {}))
    init_adapter = lora_values.pop("init_adapter", None) or None
    if init_adapter is not None and (not isinstance(init_adapter, str) or init_from is None):
        raise ConfigError(
            f"lora.init_adapter={init_adapter!r} needs model.init_from: the PEFT adapter's base checkpoint "
            "(a Hugging Face directory or Hub repo id)."
        )
    if init_adapter is not None and not lora_values.get("rank"):
        lora_values["rank"] = LoraConfig().rank  # replaced by the adapter's own (hf/finetune.py)
    lora = _lora(lora_values)
    return Experiment(
        seed, model, data, train, checkpoint, mesh, parallelism, rules, preset, raw,  # type: ignore[arg-type]
        init_from=init_from, init_revision=init_revision, model_overrides=overrides, lora=lora,
        tokenizer_from_init=tokenizer_from_init, lora_init_adapter=init_adapter,
    )  # fmt: skip


def _tokenizer_unset(data_values: dict[str, Any]) -> bool:
    """True when the data section names no tokenizer of its own: no data.tokenizer_path and data.tokenizer
    left at its default ("digits") or "hf". With model.init_from the checkpoint's tokenizer is then the run's."""
    default = DataConfig().tokenizer
    return not data_values.get("tokenizer_path") and data_values.get("tokenizer", default) in (default, "hf")


def _init_from(model_values: dict[str, Any]) -> tuple[str | None, str | None]:
    """(model.init_from, model.init_revision), popped from `model_values`; "" / None mean unset."""
    init_from = model_values.pop("init_from", None) or None
    revision = model_values.pop("init_revision", None) or None
    for name, value in (("model.init_from", init_from), ("model.init_revision", revision)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string (a path or a Hub repo id), got {value!r}.")
    if revision is not None and init_from is None:
        raise ConfigError("model.init_revision is set but model.init_from is not; set model.init_from=ORG/NAME.")
    return init_from, revision


def _typed_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """model.* keys set next to init_from, each checked against ModelConfig's field types."""
    hints = get_type_hints(ModelConfig)
    fields = _model_fields()
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(key, fields, "model.")
        _check_type(f"model.{key}", value, hints[key])
        out[key] = _as_hinted(value, hints[key])
    return out


def _lora(values: dict[str, Any]) -> LoraConfig | None:
    """The `lora` section: None when lora.rank is 0 (off), else a checked LoraConfig."""
    if values.get("rank", 0) == 0:
        return None
    return to_dataclass(LoraConfig, values, "lora")  # type: ignore[no-any-return]


def check_model_fits_data(experiment: Experiment) -> None:
    """A run's model must train `data.task` and accept the data's rows (at most `model.max_len` long).

    Not part of `validate`: tests and tools build Experiments whose model is driven without the data
    section. `train_and_evaluate` calls it first, before any data is read.
    """
    model, data, preset = experiment.model, experiment.data, experiment.preset
    task_of_model = TASK_OF_FAMILY[model.family]
    if data.task in HEAD_TASKS:
        _check_head_task(experiment)
    elif data.task != task_of_model:
        family = next(f for f, t in TASK_OF_FAMILY.items() if t == data.task)
        fitting = [name for name in presets.names() if presets.get(name).family == family]
        article = "an" if family[0] in "aeiou" else "a"
        raise ConfigError(
            f"data.task={data.task!r} needs {article} {family} model, but model.preset={preset!r} is "
            f"{model.family} (it trains task={task_of_model!r}); choose {article} {family} preset "
            f"({', '.join(fitting)}) or set data.task={task_of_model!r}."
        )
    lengths = ("max_source_length", "max_target_length") if data.task == "seq2seq" else ("max_length",)
    for name in lengths:
        length = data.length(name)
        if length > model.max_len:
            shown = f"data.{name}={length}" if getattr(data, name) is not None else f"data.max_length={length}"
            raise ConfigError(
                f"{shown} exceeds model.max_len={model.max_len} (the longest sequence the model accepts); "
                f"lower the data length or raise model.max_len to at least {length}."
            )


def _check_head_task(experiment: Experiment) -> None:
    """data.task "qa" / "token_classification": an encoder_only model with that head and a HF tokenizer.json."""
    model, data = experiment.model, experiment.data
    if model.family != "encoder_only" or model.encoder_head != data.task:
        raise ConfigError(
            f"data.task={data.task!r} trains an encoder_only model with encoder_head={data.task!r}, but the model is "
            f"{model.family} with encoder_head={model.encoder_head!r}; start from an encoder checkpoint "
            f"(model.init_from) and set model.encoder_head={data.task!r}."
        )
    if data.tokenizer != "hf":
        raise ConfigError(
            f"data.task={data.task!r} needs a Hugging Face tokenizer.json (its offsets place the labels), but "
            f"data.tokenizer={data.tokenizer!r}; start from a HF checkpoint with model.init_from (its tokenizer "
            "is used) or set data.tokenizer='hf' and data.tokenizer_path."
        )


def _rules(value: Any) -> tuple[tuple[str, Any], ...]:
    """`logical_axis_rules` as a tuple of (logical axis, mesh axis | tuple of mesh axes | None) pairs.

    The names themselves are checked against the axes and the mesh by `sharding.check_rules` (make_runtime).
    """
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"logical_axis_rules must be a list of [logical_axis, mesh_axis] pairs, got {value!r}.")
    rules = []
    for rule in value:
        if not isinstance(rule, (list, tuple)) or len(rule) != 2 or not isinstance(rule[0], str):
            raise ConfigError(
                f"logical_axis_rules: each rule is [logical_axis, mesh_axis or null], got {rule!r} "
                "(e.g. ['embed', 'fsdp'])."
            )
        name, target = rule
        rules.append((name, tuple(target) if isinstance(target, list) else target))
    return tuple(rules)
