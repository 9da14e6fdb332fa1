"""`SearchConfig`: how to decode (method, beams, sampling, length), validated once where it is built.

The CLI (its option defaults are these fields' defaults), `inference`, the demo and `decoding` all
take one `SearchConfig`; its defaults are written here only. Limits that need the model (a beam
search keeps 2 * beam_size candidates, top_k counts tokens of the vocabulary) are checked by
`check_model`, still here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from jaxformer.config.model import ModelConfig, allowed_values, check_choice
from jaxformer.config.suggest import suggest
from jaxformer.errors import ConfigError

Method = Literal["greedy", "sample", "beam"]
METHODS = allowed_values(Method)
LengthRule = Literal["gnmt", "transformers"]
EarlyStopping = Literal["false", "true", "never"]
MAX_BEAM_SIZE = 64  # the one beam-size rule: 1 <= beam_size <= MAX_BEAM_SIZE (and 2 * beam_size <= vocab_size)
MAX_SEED = 2**31 - 1


def _integer(name: str, value: Any, low: int, rule: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name}={value!r} must be {rule}.")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}={value!r} must be a number.")
    if not math.isfinite(float(value)):
        raise ConfigError(f"{name}={value!r} must be a finite number.")
    return float(value)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Decoding settings. `max_new_tokens` None: the caller's default (generation: `GENERATE_NEW_TOKENS`;
    translation: the training target length)."""

    method: Method = "greedy"  # greedy (argmax) | sample | beam
    max_new_tokens: int | None = None  # tokens to generate at most
    beam_size: int = 4  # beams for method="beam"
    alpha: float = 0.6  # GNMT length penalty ((5 + n) / 6) ** alpha for method="beam" (0 = none)
    temperature: float = 1.0  # softmax temperature for method="sample"
    top_k: int = 0  # sample from the k most likely tokens (0 = all)
    top_p: float = 1.0  # nucleus sampling mass in (0, 1] (1 = all)
    seed: int = 0  # sampling seed: a fixed seed reproduces the output
    # Beam ranking: "gnmt" (alpha above; stops when no beam can win) or "transformers" (score = log P /
    # length ** length_penalty, stopping by early_stopping "true" | "false" | "never", as transformers).
    length_rule: LengthRule = "gnmt"
    length_penalty: float = 1.0  # the exponent of length_rule="transformers"
    early_stopping: EarlyStopping = "false"  # transformers' early_stopping (True/False/"never")
    no_repeat_ngram_size: int = 0  # ban a token that repeats an n-gram of this size (0 = off)
    min_new_tokens: int = 0  # EOS is banned for the first min_new_tokens new tokens
    forced_eos_id: int | None = None  # the last new token is forced to this id (None = not forced)

    def __post_init__(self) -> None:
        try:
            check_choice("method", self.method, Method)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.max_new_tokens is not None:
            self._set("max_new_tokens", _integer("max_new_tokens", self.max_new_tokens, 1, "a positive integer"))
        beam_size = _integer("beam_size", self.beam_size, 1, "an integer >= 1")
        if beam_size > MAX_BEAM_SIZE:
            raise ConfigError(f"beam_size={beam_size} must be an integer >= 1 and at most {MAX_BEAM_SIZE}.")
        self._set("beam_size", beam_size)
        self._set("top_k", _integer("top_k", self.top_k, 0, "an integer >= 0 (0 keeps every token)"))
        self._set("seed", _integer("seed", self.seed, 0, f"an integer in [0, {MAX_SEED}]"))
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed={self.seed!r} must be an integer in [0, {MAX_SEED}].")
        top_p = self.top_p if isinstance(self.top_p, (int, float, np.number)) else math.nan
        if isinstance(self.top_p, bool) or not 0.0 < float(top_p) <= 1.0:
            raise ConfigError(
                f"top_p={self.top_p!r} must be a number in (0.0, 1.0]: sampling keeps the most likely tokens "
                "up to mass top_p, so it must be in (0, 1] (1 keeps every token)."
            )
        self._set("top_p", float(top_p))
        alpha = _number("alpha", self.alpha)
        if alpha < 0:
            raise ConfigError(f"alpha={self.alpha!r} must be >= 0 (0 = no length penalty).")
        self._set("alpha", alpha)
        temperature = _number("temperature", self.temperature)
        if self.method == "sample" and not temperature > 0:
            raise ConfigError(
                f"temperature={self.temperature!r} must be > 0 for sampling; use method='greedy' for argmax."
            )
        if temperature < 0:
            raise ConfigError(f"temperature={self.temperature!r} must be >= 0.")
        self._set("temperature", temperature)
        try:
            check_choice("length_rule", self.length_rule, LengthRule)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self._set("length_penalty", _number("length_penalty", self.length_penalty))
        stopping = str(self.early_stopping).lower() if isinstance(self.early_stopping, (bool, str)) else None
        if stopping not in allowed_values(EarlyStopping):
            raise ConfigError(
                f"early_stopping={self.early_stopping!r} must be one of {list(allowed_values(EarlyStopping))} "
                "(transformers' True / False / 'never')."
            )
        self._set("early_stopping", stopping)
        self._set(
            "no_repeat_ngram_size",
            _integer("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, "an integer >= 0 (0 = off)"),
        )
        self._set("min_new_tokens", _integer("min_new_tokens", self.min_new_tokens, 0, "an integer >= 0"))
        if self.forced_eos_id is not None:
            self._set("forced_eos_id", _integer("forced_eos_id", self.forced_eos_id, 0, "a token id >= 0 or None"))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # the checked, plain-Python value (frozen dataclass)

    @classmethod
    def of(cls, base: SearchConfig | None = None, **changes: Any) -> SearchConfig:
        """`base` (default: all defaults) with `changes` (field names) applied and validated."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(
                f"{unknown[0]!r} is not a search setting; choose from {list(FIELDS)}.{suggest(unknown[0], FIELDS)}"
            )
        return dataclasses.replace(base or cls(), **changes)

    def check_model(self, config: ModelConfig) -> None:
        """The limits that depend on the model: 2 * beam_size candidates and top_k within the vocabulary."""
        if self.method == "beam" and 2 * self.beam_size > config.vocab_size:
            raise ConfigError(f"beam_size={self.beam_size} needs 2 * beam_size <= vocab_size={config.vocab_size}.")
        if self.method == "sample" and self.top_k > config.vocab_size:
            raise ConfigError(
                f"top_k={self.top_k} must be at most vocab_size={config.vocab_size} (0 keeps every token)."
            )
        if self.forced_eos_id is not None and self.forced_eos_id >= config.vocab_size:
            raise ConfigError(f"forced_eos_id={self.forced_eos_id} must be below vocab_size={config.vocab_size}.")

    def new_tokens(self, default: int) -> int:
        """max_new_tokens, or `default` when it is None."""
        return default if self.max_new_tokens is None else self.max_new_tokens


FIELDS = tuple(f.name for f in dataclasses.fields(SearchConfig))
GENERATE_NEW_TOKENS = 64  # generation's max_new_tokens when none is given
DEFAULT = SearchConfig()
