"""Configs on the ground floor: typed, frozen dataclasses validated once where they are built.

`model.py` holds `ModelConfig` (the architecture); `run.py` the run's `TrainConfig`, `CheckpointConfig`
and `MeshConfig`; `lora.py` the `LoraConfig` of adapter fine-tuning. Nothing here imports from the rest
of the package.
"""

from jaxformer.config.lora import LORA_MODULES, LoraConfig
from jaxformer.config.model import (
    Activation,
    AttentionImpl,
    DType,
    EncoderHead,
    Family,
    ModelConfig,
    NormKind,
    NormPosition,
    PositionKind,
    RematPolicy,
    SinusoidalLayout,
    allowed_values,
    check_choice,
    check_positive,
    check_rate,
    field_names,
)
from jaxformer.config.run import (
    CheckpointConfig,
    ConfigError,
    MeshConfig,
    Optimizer,
    Parallelism,
    Schedule,
    TrainConfig,
)

__all__ = [
    "LORA_MODULES",
    "Activation",
    "AttentionImpl",
    "CheckpointConfig",
    "ConfigError",
    "DType",
    "EncoderHead",
    "Family",
    "LoraConfig",
    "MeshConfig",
    "ModelConfig",
    "NormKind",
    "NormPosition",
    "Optimizer",
    "Parallelism",
    "PositionKind",
    "RematPolicy",
    "Schedule",
    "SinusoidalLayout",
    "TrainConfig",
    "allowed_values",
    "check_choice",
    "check_positive",
    "check_rate",
    "field_names",
]
