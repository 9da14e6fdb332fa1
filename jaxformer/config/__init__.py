"""Configs on the ground floor: typed, frozen dataclasses validated once where they are built.

`model.py` holds `ModelConfig` (the architecture); `run.py` the run's `TrainConfig`, `CheckpointConfig`
and `MeshConfig`; `search.py` the decoding settings `SearchConfig`. Nothing here imports from the rest of the package.
"""

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
from jaxformer.config.search import GENERATE_NEW_TOKENS, MAX_BEAM_SIZE, Method, SearchConfig

__all__ = [
    "GENERATE_NEW_TOKENS",
    "MAX_BEAM_SIZE",
    "Activation",
    "AttentionImpl",
    "CheckpointConfig",
    "ConfigError",
    "DType",
    "EncoderHead",
    "Family",
    "MeshConfig",
    "Method",
    "ModelConfig",
    "NormKind",
    "NormPosition",
    "Optimizer",
    "Parallelism",
    "PositionKind",
    "RematPolicy",
    "Schedule",
    "SearchConfig",
    "SinusoidalLayout",
    "TrainConfig",
    "allowed_values",
    "check_choice",
    "check_positive",
    "check_rate",
    "field_names",
]
