"""Checking and packing decoding inputs: prompts and sources (the search settings check themselves:
`jaxformer.config.SearchConfig`).

Prompts of different lengths share one batch by left padding, so that every
row's last prompt token sits in the same (last) column and new tokens are
appended at the same cache slot for all rows. Positions count real tokens
only (`cumsum(valid) - 1`), so each row's positions start at 0.

Legend: B batch, P prompt length, S source length.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding.steps import DecodeInputs
from jaxformer.errors import InputError


def pack_prompts(
    prompts: Sequence[Sequence[int]] | np.ndarray, lengths: Sequence[int] | np.ndarray | None = None, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad prompts into one batch.

    prompts: a list of token-id lists, or an int array [B, P] whose row b holds its
    real tokens first (`lengths[b]` of them; all P when `lengths` is None).
    Returns (tokens [B, P] int32 left-padded with `pad_id`, valid [B, P] bool).
    """
    rows = _prompt_rows(prompts, lengths)
    if not rows:
        raise InputError("prompts is empty; pass at least one prompt (a list of token ids).")
    for index, row in enumerate(rows):
        if len(row) == 0:
            raise InputError(f"prompt {index} is empty; every prompt needs at least one token (e.g. a BOS id).")
    width = max(len(row) for row in rows)
    tokens = np.full((len(rows), width), pad_id, np.int32)
    valid = np.zeros((len(rows), width), bool)
    for index, row in enumerate(rows):
        tokens[index, width - len(row) :] = row
        valid[index, width - len(row) :] = True
    return tokens, valid


def _prompt_rows(
    prompts: Sequence[Sequence[int]] | np.ndarray, lengths: Sequence[int] | np.ndarray | None
) -> list[np.ndarray]:
    if isinstance(prompts, np.ndarray) or hasattr(prompts, "shape"):
        array = np.asarray(prompts)
        if array.ndim != 2:
            raise InputError(f"prompts array must be [B, P] token ids, got shape {array.shape}.")
        if lengths is None:
            return [row for row in array.astype(np.int64)]
        lengths = np.asarray(lengths)
        if lengths.shape != (array.shape[0],):
            raise InputError(f"lengths must be [B] = [{array.shape[0]}], got shape {lengths.shape}.")
        if np.any(lengths < 0) or np.any(lengths > array.shape[1]):
            raise InputError(f"lengths {lengths.tolist()} must lie in [0, P={array.shape[1]}] (real tokens per row).")
        return [array[b, : int(n)].astype(np.int64) for b, n in enumerate(lengths)]
    if lengths is not None:
        raise InputError("lengths is only used with a [B, P] prompts array; a list of lists carries its own lengths.")
    return [np.asarray(list(row), np.int64).reshape(-1) for row in prompts]


def positions_from_valid(valid: np.ndarray) -> np.ndarray:
    """[B, P] positions cumsum(valid) - 1, clipped at 0 for left padding (those slots are masked)."""
    return np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)


def check_token_ids(config: ModelConfig, tokens: np.ndarray, valid: np.ndarray, name: str) -> None:
    """Real tokens must be ids in [0, vocab_size)."""
    real = tokens[valid]
    if real.size and (real.min() < 0 or real.max() >= config.vocab_size):
        bad = int(real.min() if real.min() < 0 else real.max())
        raise InputError(f"{name} contains token id {bad} outside [0, vocab_size={config.vocab_size}).")


def check_id(config: ModelConfig, name: str, value: int | None, required: bool = False) -> None:
    if value is None:
        if required:
            raise InputError(f"{name} is required here; pass the tokenizer's {name}.")
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < config.vocab_size:
        raise InputError(f"{name}={value!r} must be a token id in [0, vocab_size={config.vocab_size}).")


def check_family(config: ModelConfig, family: str, function: str) -> None:
    if config.family != family:
        other = "translate/beam_search" if family == "decoder_only" else "generate/beam_search"
        raise InputError(
            f"{function}() needs {'an' if family[0] in 'aeiou' else 'a'} {family} model, got family={config.family!r}; use {other} instead."
        )


def check_total_length(config: ModelConfig, prompt_length: int, max_new_tokens: int, what: str = "prompt") -> None:
    """Every position used while decoding must be below config.max_len."""
    total = prompt_length + max_new_tokens
    if total > config.max_len:
        raise InputError(
            f"{what} length {prompt_length} + max_new_tokens {max_new_tokens} = {total} exceeds the model's "
            f"max_len={config.max_len}; shorten the {what} or ask for fewer new tokens."
        )


def check_target_length(config: ModelConfig, max_new_tokens: int) -> None:
    """Encoder-decoder: BOS and the first max_new_tokens - 1 outputs take decoder positions 0..max_new_tokens - 1."""
    if max_new_tokens > config.max_len:
        raise InputError(
            f"max_new_tokens={max_new_tokens} exceeds the model's max_len={config.max_len}; ask for fewer new tokens."
        )


def check_source(config: ModelConfig, source: np.ndarray, source_valid: np.ndarray | None) -> np.ndarray:
    """Validate source [B, S] ids and return its validity mask [B, S] (all True when None)."""
    if source.ndim != 2 or source.shape[0] == 0 or source.shape[1] == 0:
        raise InputError(f"source must be a non-empty [B, S] array of token ids, got shape {source.shape}.")
    if source.shape[1] > config.max_len:
        raise InputError(
            f"source length {source.shape[1]} exceeds the model's max_len={config.max_len}; truncate the source."
        )
    valid = np.ones(source.shape, bool) if source_valid is None else np.asarray(source_valid, bool)
    if valid.shape != source.shape:
        raise InputError(f"source_valid has shape {valid.shape} but source is {source.shape}; they must match.")
    empty = np.flatnonzero(~valid.any(axis=1))
    if empty.size:
        raise InputError(f"source row {int(empty[0])} has no valid token; every source needs at least one.")
    check_token_ids(config, source, valid, "source")
    return valid


def required_new_tokens(search: SearchConfig) -> int:
    """The search's max_new_tokens, which decoding needs explicitly."""
    if search.max_new_tokens is None:
        raise ValueError("max_new_tokens is required for decoding; pass max_new_tokens=N (N >= 1).")
    return search.max_new_tokens


def prompt_inputs(
    config: ModelConfig,
    prompts: Sequence[Sequence[int]] | np.ndarray,
    lengths: Sequence[int] | np.ndarray | None,
    pad_id: int,
    max_new_tokens: int,
) -> DecodeInputs:
    """Checked, left-padded decoder-only inputs (tokens, valid, positions [B, P])."""
    tokens, valid = pack_prompts(prompts, lengths, pad_id)
    check_token_ids(config, tokens, valid, "prompts")
    check_total_length(config, tokens.shape[1], max_new_tokens)
    return DecodeInputs(tokens, valid, positions_from_valid(valid))


def source_inputs(
    config: ModelConfig,
    source: np.ndarray,
    source_valid: np.ndarray | None,
    bos_id: int | None,
    max_new_tokens: int,
    forced_bos_id: int | None = None,
) -> DecodeInputs:
    """Checked encoder-decoder inputs (source [B, S], source_valid [B, S], bos_id, the forced first token)."""
    check_id(config, "bos_id", bos_id, required=True)
    check_id(config, "forced_bos_id", forced_bos_id)
    source = np.asarray(source)
    valid = check_source(config, source, source_valid)
    check_target_length(config, max_new_tokens)
    forced = jnp.int32(-1 if forced_bos_id is None else forced_bos_id)  # traced: no recompilation
    return DecodeInputs(source.astype(np.int32), valid, None, jnp.int32(bos_id), forced)
