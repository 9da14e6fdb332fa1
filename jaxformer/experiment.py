"""Experiment configuration: `ml_collections` files in, typed frozen configs out.

An experiment file defines `get_config() -> ConfigDict`, usually `base_config()` plus
a few changes. `load(path, overrides)` reads it, applies `--config.a.b=value`
overrides (unknown keys and wrong types are rejected with the nearest valid key) and
`validate` turns it into an `Experiment` of frozen dataclasses, so every later stage
receives checked, typed values.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import ml_collections

from jaxformer import presets
from jaxformer.config import ModelConfig, check_choice
from jaxformer.data.config import DataConfig
from jaxformer.train.config import (
    CheckpointConfig,
    ConfigError,
    MeshConfig,
    Parallelism,
    TrainConfig,
)


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


# Logical axis -> mesh axis (None: replicated). See jaxformer/layers/axes.py for the names.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("length", None),
    ("token_types", None),
    ("relpos", None),
    ("classes", None),
    ("layers", None),
)


def base_config() -> ml_collections.ConfigDict:
    """Every key an experiment may set, with its default. Experiments start from this."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds parameters, dropout and data order
    config.model = ml_collections.ConfigDict({"preset": "tiny-transformer"})  # + any ModelConfig field
    config.data = ml_collections.ConfigDict(dataclasses.asdict(DataConfig()))
    config.train = ml_collections.ConfigDict(dataclasses.asdict(TrainConfig()))
    config.checkpoint = ml_collections.ConfigDict(dataclasses.asdict(CheckpointConfig()))
    config.mesh = ml_collections.ConfigDict(dataclasses.asdict(MeshConfig()))
    config.parallelism = "jit"  # "jit" (sharded by the mesh and the rules) or "pmap" (data parallel)
    config.logical_axis_rules = [list(rule) for rule in DEFAULT_RULES]
    return config


# Loading -----------------------------------------------------------------


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Run `get_config()` of the experiment file at `path`, then apply `a.b=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} not found; experiments live in experiments/*.py.")
    spec = importlib.util.spec_from_file_location(f"jaxformer_experiment_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import experiment file {str(path)!r}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"experiment file {str(path)!r} has no get_config() function.")
    config = module.get_config()
    for item in overrides:
        apply_override(config, item)
    return config


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, f"{full}."))
    return keys


def _nearest(key: str, candidates: list[str] | tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {hint[0]!r}?" if hint else ""


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
    """Apply one `a.b.c=value` override. `model.*` keys may name any ModelConfig field."""
    item = item[len("--config.") :] if item.startswith("--config.") else item
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like --config.key=value.")
    key, text = item.split("=", 1)
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key {key!r}.{_nearest(key, _flat_keys(config))}")
        node = node[part]
        del depth
    leaf = parts[-1]
    value = _parse_value(text)
    if leaf not in node:
        allowed_new = parts[0] == "model" and len(parts) == 2 and leaf in _model_fields()
        if not allowed_new:
            candidates = _flat_keys(config) + [f"model.{f}" for f in _model_fields()]
            raise ConfigError(f"unknown config key {key!r}.{_nearest(key, candidates)}")
        with node.unlocked():
            node[leaf] = value
        return
    current = node[leaf]
    if current is not None and value is not None:
        value = _coerce(key, value, type(current))
    with node.unlocked():
        node[leaf] = value


def _coerce(key: str, value: Any, want: type) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want in (list, tuple) and isinstance(value, (list, tuple)):
        return want(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} expects {want.__name__}, got {value!r} ({type(value).__name__}).")
    return value


def _model_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModelConfig))


# Validation --------------------------------------------------------------


def _choice(field: str, value: Any, literal: Any) -> None:
    try:
        check_choice(field, value, literal)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def to_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build frozen dataclass `cls` from `values`, checking keys and types (naming `section.key`)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{section}.{key}'.{_nearest(key, tuple(fields))}")
        _check_type(f"{section}.{key}", value, hints[key])
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        message = str(err)
        if not message.startswith(section):
            message = f"{section}: {message}"
        raise ConfigError(message) from None


def _check_type(name: str, value: Any, hint: Any) -> None:
    origin = get_origin(hint)
    if origin is Literal:
        _choice(name, value, hint)
        return
    options = get_args(hint) if origin is not None else (hint,)
    if value is None:
        if type(None) in options:
            return
        raise ConfigError(f"config key {name!r} may not be None.")
    plain = [o for o in options if o is not type(None) and isinstance(o, type)]
    if not plain:
        return
    if bool in plain and isinstance(value, bool):
        return
    if isinstance(value, bool) and bool not in plain:
        raise ConfigError(f"config key {name!r} expects {plain[0].__name__}, got {value!r}.")
    if float in plain and isinstance(value, (int, float)):
        return
    if tuple in plain and isinstance(value, (list, tuple)):
        return
    if not isinstance(value, tuple(plain)):
        raise ConfigError(f"config key {name!r} expects {plain[0].__name__}, got {value!r} ({type(value).__name__}).")


def validate(config: ml_collections.ConfigDict) -> Experiment:
    """Turn a loaded ConfigDict into a checked `Experiment` (raises ConfigError with one clear line)."""
    raw = config.to_dict()
    top = set(base_config().keys())
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown config key {key!r}.{_nearest(key, tuple(top))}")
    model_values = dict(raw.get("model", {}))
    preset = model_values.pop("preset", None)
    if not isinstance(preset, str):
        raise ConfigError(f"model.preset must name a preset, got {preset!r}; available: {presets.names()}")
    if preset not in presets.names():
        raise ConfigError(
            f"unknown model.preset {preset!r}.{_nearest(preset, presets.names())} Available: {presets.names()}"
        )
    base_model = presets.get(preset)
    hints = get_type_hints(ModelConfig)
    for key, value in model_values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key 'model.{key}'.{_nearest(key, _model_fields())}")
        _check_type(f"model.{key}", value, hints[key])
    try:
        model = base_model.replace(**model_values)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    data = to_dataclass(DataConfig, dict(raw.get("data", {})), "data")
    train = to_dataclass(TrainConfig, dict(raw.get("train", {})), "train")
    checkpoint = to_dataclass(CheckpointConfig, dict(raw.get("checkpoint", {})), "checkpoint")
    mesh = to_dataclass(MeshConfig, dict(raw.get("mesh", {})), "mesh")
    parallelism = raw.get("parallelism", "jit")
    _choice("parallelism", parallelism, Parallelism)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r} must be an integer.")
    rules = tuple((str(name), _rule_target(target)) for name, target in raw.get("logical_axis_rules", DEFAULT_RULES))
    return Experiment(seed, model, data, train, checkpoint, mesh, parallelism, rules, preset, raw)  # type: ignore[arg-type]


def _rule_target(target: Any) -> Any:
    if isinstance(target, list):
        return tuple(target)
    return target
