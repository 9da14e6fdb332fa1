"""Configs on the ground floor: typed, frozen dataclasses validated once where they are built.

`model.py` holds `ModelConfig` (the architecture); `run.py` the run's `TrainConfig`, `CheckpointConfig`,
`MeshConfig` and the default logical-axis rules; `lora.py` the `LoraConfig` of adapter fine-tuning;
`search.py` the decoding settings `SearchConfig`; `suggest.py` the one "Did you mean" helper. Nothing
here imports from the rest of the package (tests/test_import_graph.py checks it).
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
    check_heads,
    check_positive,
    check_rate,
    field_names,
    padding_position,
)
from jaxformer.config.run import (
    DEFAULT_RULES,
    CheckpointConfig,
    MeshConfig,
    Optimizer,
    Parallelism,
    Schedule,
    TrainConfig,
)
from jaxformer.config.search import GENERATE_NEW_TOKENS, MAX_BEAM_SIZE, Method, SearchConfig
from jaxformer.config.suggest import suggest
from jaxformer.errors import ConfigError

__all__ = [
    "DEFAULT_RULES",
    "GENERATE_NEW_TOKENS",
    "LORA_MODULES",
    "MAX_BEAM_SIZE",
    "Activation",
    "AttentionImpl",
    "CheckpointConfig",
    "ConfigError",
    "DType",
    "EncoderHead",
    "Family",
    "LoraConfig",
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
    "check_heads",
    "check_positive",
    "check_rate",
    "field_names",
    "padding_position",
    "suggest",
]
