"""Token rules every search applies to the next-token scores (transformers' logits processors of the same names).

    no_repeat_ngram_size n: a token that would complete an n-gram already in the history is banned
    min_new_tokens m:       EOS is banned for the first m new tokens
    forced_eos_id e:        the last new token (index max_new_tokens - 1) is forced to e

The history a row is checked against is its prefix (decoder-only: the left-padded prompt [B, P], pads
included, as transformers' `input_ids`; encoder-decoder: the decoder start token [B, 1]) followed by its
new tokens. Beam search applies the rules to log-probabilities (after the softmax, as transformers does),
greedy and sampling to logits.

Legend: R rows (batch, or batch * beams), L history length, K prefix length, V vocabulary, n n-gram size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding.steps import DecodeInputs, force_token


class Rules(NamedTuple):
    """The traced rule settings (int32 scalars; -1 = none). n-gram size is static (it sets window shapes)."""

    eos_id: jax.Array
    min_new_tokens: jax.Array
    forced_eos_id: jax.Array


def rules_of(search: SearchConfig, eos_id: int | None) -> Rules:
    forced = -1 if search.forced_eos_id is None else search.forced_eos_id
    eos = -1 if eos_id is None else eos_id
    return Rules(jnp.int32(eos), jnp.int32(search.min_new_tokens), jnp.int32(forced))


def prefix_tokens(config: ModelConfig, inputs: DecodeInputs) -> jax.Array:
    """[B, K] tokens before the first new token: the prompt, or the decoder start token."""
    if config.family == "encoder_decoder":
        return jnp.full((inputs.tokens.shape[0], 1), inputs.bos_id, jnp.int32)
    return jnp.asarray(inputs.tokens, jnp.int32)


def banned_ngram_tokens(history: jax.Array, count: jax.Array, size: int, vocab: int) -> jax.Array:
    """history [R, L] whose first `count` tokens are real -> banned [R, V] bool: the tokens v for which
    (history[count - size + 1 : count], v) is an n-gram (n = size) already in history[:count]."""
    rows, length = history.shape
    windows = length - size + 1  # M n-gram start positions
    if size <= 0 or windows <= 0:
        return jnp.zeros((rows, vocab), bool)
    grams = jnp.stack([history[:, k : k + windows] for k in range(size)], axis=-1)  # [R, M, n]
    start = jnp.maximum(count - size + 1, 0)
    query = jax.lax.dynamic_slice_in_dim(history, start, size - 1, axis=1)  # [R, n - 1]
    match = jnp.all(grams[:, :, : size - 1] == query[:, None, :], axis=-1)  # [R, M]
    match &= (jnp.arange(windows) <= count - size)[None, :]  # the whole n-gram lies in history[:count]
    banned = jnp.zeros((rows, vocab), bool)
    return banned.at[jnp.arange(rows)[:, None], grams[:, :, -1]].max(match)


def apply_rules(
    scores: jax.Array,
    step: jax.Array,
    history: jax.Array,
    count: jax.Array,
    rules: Rules,
    *,
    no_repeat_ngram_size: int,
    max_new_tokens: int,
) -> jax.Array:
    """scores [R, V] of new token `step` (history [R, L], `count` real tokens) with the rules applied."""
    vocab = scores.shape[-1]
    if no_repeat_ngram_size > 0:
        banned = banned_ngram_tokens(history, count, no_repeat_ngram_size, vocab)
        scores = jnp.where(banned, -jnp.inf, scores)
    early_eos = (jnp.arange(vocab) == rules.eos_id) & (step < rules.min_new_tokens)
    scores = jnp.where(early_eos[None, :], -jnp.inf, scores)
    forced = jnp.where(step == max_new_tokens - 1, rules.forced_eos_id, -1)
    return force_token(scores, forced)
