"""`LoraConfig`: low-rank adapters (Hu et al. 2021) on a frozen base model, validated once here.

    W' = W + (alpha / rank) * A B      A [in, rank] (normal init), B [rank, out] (zeros)

`targets` are module names (`LORA_MODULES`: attention query/key/value/output projections, MLP
gate/up/down) or regular expressions searched in parameter paths such as
"decoder/layers_0/self_attention/query_kernel" (scanned stacks: "decoder/layers/...").
`train_modules` names top-level parameter modules (e.g. "classifier") trained in full next to the
adapters -- PEFT's `modules_to_save`: a new head must learn, it has no pretrained weights to adapt.
"""

from __future__ import annotations

import dataclasses
import re

from jaxformer.config.suggest import suggest
from jaxformer.errors import ConfigError

# Module name -> the kernel leaf it adapts (attention: [D, N, H] / out [N, H, D]; MLP: [D, F] / down [F, D]).
LORA_MODULES: dict[str, str] = {
    "query": "query_kernel",
    "key": "key_kernel",
    "value": "value_kernel",
    "out": "out_kernel",
    "gate": "gate_kernel",
    "up": "up_kernel",
    "down": "down_kernel",
}
REGEX_CHARS = set("/.*+?[](){}|^$\\")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8  # r: inner width of each adapter
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # adapter input dropout while training (see models/lora.py)
    targets: tuple[str, ...] = ("query", "value")  # module names or path regexes
    train_modules: tuple[str, ...] = ()  # top-level modules trained in full (PEFT modules_to_save), e.g. classifier

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0:
            raise ConfigError(f"lora.rank={self.rank!r} must be a positive integer (e.g. 8).")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ConfigError(f"lora.alpha={self.alpha!r} must be a positive number (e.g. 16).")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout={self.dropout!r} must be a number in [0, 1).")
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError(
                f"lora.targets={self.targets!r} must be a non-empty list of module names {list(LORA_MODULES)} "
                "or parameter-path regexes."
            )
        for target in targets:
            check_target(target)
        object.__setattr__(self, "targets", targets)
        modules = (self.train_modules,) if isinstance(self.train_modules, str) else tuple(self.train_modules)
        if not all(isinstance(m, str) and m and "/" not in m for m in modules):
            raise ConfigError(
                f"lora.train_modules={self.train_modules!r} must list top-level module names such as 'classifier'."
            )
        object.__setattr__(self, "train_modules", modules)
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))

    @property
    def scale(self) -> float:
        """alpha / rank: the factor of the adapter update A B."""
        return self.alpha / self.rank


def check_target(target: str) -> None:
    """A module name from LORA_MODULES, or a valid regex (anything with a '/' or regex character)."""
    if target in LORA_MODULES:
        return
    if not REGEX_CHARS & set(target):
        suggestion = suggest(target, list(LORA_MODULES))
        raise ConfigError(
            f"lora.targets entry {target!r} is not a module name; choose from {list(LORA_MODULES)} "
            f"or give a parameter-path regex such as 'decoder/layers_0/self_attention/query'.{suggestion}"
        )
    try:
        re.compile(target)
    except re.error as err:
        raise ConfigError(f"lora.targets entry {target!r} is not a valid regular expression: {err}.") from None
