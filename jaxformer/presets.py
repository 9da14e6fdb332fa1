"""Named architectures. `get(name)` returns a validated `ModelConfig`; `names()` lists them.

Full-size presets follow their papers/checkpoints; each has a `tiny-` twin with
small, odd, all-different sizes (so a transposed axis cannot pass a test).
"""

from __future__ import annotations

from jaxformer import architectures
from jaxformer.config import ModelConfig, suggest
from jaxformer.errors import ConfigError

_PRESETS: dict[str, dict] = {
    name: fields for module in architectures.MODULES for name, fields in module.PRESETS.items()
}


def names() -> list[str]:
    """All preset names, sorted."""
    return sorted(_PRESETS)


def get(name: str, **overrides: object) -> ModelConfig:
    """The `ModelConfig` of preset `name`, with optional field overrides."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}.{suggest(name, names())} Available: {names()}")
    return ModelConfig(**_PRESETS[name]).replace(**overrides)
