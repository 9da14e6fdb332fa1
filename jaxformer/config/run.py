"""Typed, frozen training configs: `TrainConfig`, `CheckpointConfig`, `MeshConfig`, and the
default logical-axis rules (`DEFAULT_RULES`) that map parameter/activation axes onto the mesh.

Each validates itself on construction and raises `ConfigError` (a `jaxformer.errors.UserError`,
also a ValueError) naming the key (as `section.key`), the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from jaxformer.config.model import check_choice
from jaxformer.errors import ConfigError


def _choice(field: str, value: Any, literal: Any) -> None:
    try:
        check_choice(field, value, literal)
    except ValueError as err:
        raise ConfigError(str(err)) from None


Schedule = Literal["cosine", "linear", "constant", "rsqrt", "noam"]
Optimizer = Literal["adamw", "adafactor", "sgd"]
Parallelism = Literal["jit", "pmap"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer updates
    batch_size: int = 32  # global batch (examples), split over devices and hosts
    learning_rate: float = 1e-3  # peak learning rate (multiplier of the formula for "noam")
    schedule: Schedule = "cosine"  # warm-up then: cosine | linear | constant decay; rsqrt | noam (2017 paper)
    warmup_steps: int = 100  # linear warm-up from 0 to the peak
    end_learning_rate_ratio: float = 0.0  # cosine/linear end value as a fraction of the peak
    optimizer: Optimizer = "adamw"
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-9
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # decoupled; never applied to norms, biases or position tables
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    grad_accum_steps: int = 1  # micro-batches per update (batch_size must be divisible by it)
    label_smoothing: float = 0.0
    eval_every: int = 200  # steps between evaluations (0: only at the end)
    eval_batches: int = 0  # batches per evaluation (0: the whole split)
    eval_at_start: bool = False  # also evaluate before the first step (recorded as step 0); not on resume
    log_every: int = 50  # steps between metric records
    num_samples: int = 3  # examples decoded and printed at each evaluation
    progress: bool = True  # console progress bar
    # Issue 20: a logged loss above divergence_factor x the lowest logged loss so far is divergence.
    divergence_factor: float = 100.0  # 0: never flag
    on_divergence: Literal["warn", "stop"] = "warn"

    def __post_init__(self) -> None:
        if not (self.divergence_factor == 0 or self.divergence_factor > 1):
            raise ConfigError(f"train.divergence_factor={self.divergence_factor!r} must be > 1 (or 0 to turn it off).")
        _choice("train.on_divergence", self.on_divergence, Literal["warn", "stop"])
        for name in ("steps", "batch_size", "grad_accum_steps", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"train.{name}={value!r} must be a positive integer.")
        for name in ("warmup_steps", "eval_every", "eval_batches", "num_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"train.{name}={value!r} must be a non-negative integer.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"train.learning_rate={self.learning_rate!r} must be a positive number.")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)!r} must be >= 0.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing!r} must be in [0, 1).")
        if not 0.0 <= self.end_learning_rate_ratio <= 1.0:
            raise ConfigError(f"train.end_learning_rate_ratio={self.end_learning_rate_ratio!r} must be in [0, 1].")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum_steps={self.grad_accum_steps}."
            )
        if self.schedule in ("rsqrt", "noam") and self.warmup_steps < 1:
            raise ConfigError(f"train.schedule={self.schedule!r} needs train.warmup_steps >= 1.")
        for name, lit in (("schedule", Schedule), ("optimizer", Optimizer)):
            _choice(f"train.{name}", getattr(self, name), lit)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500  # steps between saves (0: only at the end)
    keep: int = 3  # most recent checkpoints kept
    keep_best: str = ""  # also keep the best by this eval metric ("eval_loss", "eval_accuracy"); "" disables
    async_save: bool = True  # write in the background while training continues
    start_fresh_if_corrupt: bool = False  # when every checkpoint is unreadable: start over (True) or stop (False)

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 0:
            raise ConfigError(f"checkpoint.every={self.every!r} must be a non-negative integer.")
        if not isinstance(self.keep, int) or self.keep < 1:
            raise ConfigError(f"checkpoint.keep={self.keep!r} must be a positive integer.")


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


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # data-parallel axis size; -1 = the devices left over
    fsdp: int = 1  # fully-sharded data parallel (params and optimizer state split)
    tensor: int = 1  # tensor parallel (heads and MLP units split)
    # The CPU backend only: split the host into this many XLA devices before JAX starts (JAX's
    # jax_num_cpu_devices; jaxformer.distributed.set_cpu_device_count). 0 = JAX's default.
    cpu_devices: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.cpu_devices, int) or isinstance(self.cpu_devices, bool) or self.cpu_devices < 0:
            raise ConfigError(
                f"mesh.cpu_devices={self.cpu_devices!r} must be a non-negative integer "
                "(0 keeps JAX's default of one CPU device)."
            )
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        if sum(1 for v in sizes.values() if v == -1) > 1:
            raise ConfigError(f"mesh: at most one axis may be -1, got {sizes}.")
        for name, value in sizes.items():
            if not isinstance(value, int) or (value < 1 and value != -1):
                raise ConfigError(f"mesh.{name}={value!r} must be a positive integer or -1.")
