"""Beam search with the GNMT length penalty (Wu et al. 2016, eq. 14), for both decoder families.

A hypothesis y of |y| generated tokens (its EOS included) is ranked by

    score(y) = log P(y | x) / lp(|y|),    lp(n) = ((5 + n) / 6) ** alpha.

Each step extends the W alive beams by every token, keeps the 2W best extensions
by log-probability (each parent has one EOS extension, so at least W are not EOS), moves those ending in EOS
that rank among the W best to a pool of W finished hypotheses ranked by score (the rule of
fairseq and transformers; lower-ranked EOS extensions are dropped), and keeps the W best
non-EOS extensions alive. A batch entry stops once its pool is full and no alive beam can still beat
the pool's worst score (log-probabilities only fall and lp grows with length, so
alive_logp / lp(max_new_tokens) bounds any continuation). Beams still alive at the
end compete with the pool at their current length. The loop runs inside `jit`
(`lax.while_loop`, in stages of growing cache length: `slot_stages`); the cache rows follow
their beams by a gather along the batch axis of every cache entry (`cache.gather_beams`).
With W = 1 the search is greedy decoding: only the top-ranked candidate can finish, and the
alive beam follows the argmax path.

Legend: B batch, W beams, N max new tokens, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding import inputs as checks
from jaxformer.decoding.cache import gather_beams, resize_slots, slot_count
from jaxformer.decoding.rules import Rules, apply_rules, prefix_tokens, rules_of
from jaxformer.decoding.sampling import largest_k
from jaxformer.decoding.steps import LOOP_COMPILER_OPTIONS, DecodeInputs, DecodeState, prefill
from jaxformer.errors import InputError


def length_penalty(length: Any, alpha: Any) -> Any:
    """GNMT length penalty ((5 + length) / 6) ** alpha (works on numbers and arrays)."""
    return ((5.0 + length) / 6.0) ** alpha


@dataclasses.dataclass(frozen=True)
class BeamResult:
    """Finished hypotheses, best first.

    sequences [B, W, N] int32 (pad after EOS / after `lengths`), scores [B, W]
    (sum of token log-probs / length_penalty(lengths)), lengths [B, W] (generated
    tokens, EOS included).
    """

    sequences: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray


class Beams(NamedTuple):
    alive_seqs: jax.Array  # [B, W, N]
    alive_logp: jax.Array  # [B, W]
    finished_seqs: jax.Array  # [B, W, N]
    finished_scores: jax.Array  # [B, W], -inf where empty
    finished_lengths: jax.Array  # [B, W]
    open: jax.Array  # [B] length_rule="transformers": the entry still takes finished hypotheses


class Ranking(NamedTuple):
    """How beams are ranked and when an entry stops. rule / early_stopping / rule settings static, the rest traced."""

    rule: str  # "gnmt" | "transformers"
    early_stopping: str  # "false" | "true" | "never"
    alpha: jax.Array  # gnmt exponent
    length_penalty: jax.Array  # transformers exponent
    rules: Rules
    no_repeat_ngram_size: int
    max_new_tokens: int


def _penalty(ranking: Ranking, length: jax.Array) -> jax.Array:
    """The divisor of a hypothesis' log-probability at `length` generated tokens."""
    if ranking.rule == "transformers":
        return length.astype(jnp.float32) ** ranking.length_penalty
    return length_penalty(length.astype(jnp.float32), ranking.alpha)


def _take(values: jax.Array, indices: jax.Array) -> jax.Array:
    """values [B, M, ...], indices [B, W] -> [B, W, ...]."""
    expand = indices.reshape(indices.shape + (1,) * (values.ndim - 2))
    return jnp.take_along_axis(values, expand, axis=1)


def _keep_best(scores: jax.Array, seqs: jax.Array, lengths: jax.Array, width: int) -> tuple[jax.Array, ...]:
    """Top `width` of scores [B, M] with their seqs [B, M, N] and lengths [B, M], best first."""
    best, index = jax.lax.top_k(scores, width)
    return best, _take(seqs, index), _take(lengths, index)


def _select(
    step: jax.Array, logits: jax.Array, beams: Beams, ranking: Ranking, prefix: jax.Array
) -> tuple[Beams, jax.Array, jax.Array]:
    """Extend beams by one token chosen from logits [B * W, V] at output index `step` (prefix [B * W, K]).

    Returns (beams, parent rows [B * W] into the current cache, new tokens [B * W]).
    """
    batch, width, _ = beams.alive_seqs.shape
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    history = jnp.concatenate([prefix, beams.alive_seqs.reshape(batch * width, -1)], axis=1)  # [B * W, K + N]
    log_probs = apply_rules(
        log_probs,
        step,
        history,
        prefix.shape[1] + step,
        ranking.rules,
        no_repeat_ngram_size=ranking.no_repeat_ngram_size,
        max_new_tokens=ranking.max_new_tokens,
    ).reshape(batch, width, vocab)
    candidates = (beams.alive_logp[:, :, None] + log_probs).reshape(batch, width * vocab)  # [B, W * V]
    values, index = largest_k(candidates, 2 * width)  # [B, 2W]
    parent, token = index // vocab, (index % vocab).astype(jnp.int32)
    seqs = _take(beams.alive_seqs, parent).at[:, :, step].set(token)  # [B, 2W, N]
    is_eos = token == ranking.rules.eos_id  # eos_id -1: no EOS
    # An EOS extension finishes a hypothesis only when it ranks among the W best candidates
    # (the rule of fairseq and transformers); lower-ranked EOS extensions are dropped.
    finishes = is_eos & (jnp.arange(2 * width) < width)[None, :]
    length = step + 1
    if ranking.rule == "transformers":
        # transformers: at the last step the W best candidates all finish; a closed entry takes none.
        last = step == ranking.max_new_tokens - 1
        finishes = (is_eos | last) & (jnp.arange(2 * width) < width)[None, :] & beams.open[:, None]
    new_scores = jnp.where(finishes, values / _penalty(ranking, length), -jnp.inf)
    finished_scores, finished_seqs, finished_lengths = _keep_best(
        jnp.concatenate([beams.finished_scores, new_scores], axis=1),
        jnp.concatenate([beams.finished_seqs, seqs], axis=1),
        jnp.concatenate([beams.finished_lengths, jnp.full_like(token, length)], axis=1),
        width,
    )
    alive_logp, keep = jax.lax.top_k(jnp.where(is_eos, -jnp.inf, values), width)  # [B, W]
    parents = (jnp.arange(batch)[:, None] * width + _take(parent, keep)).reshape(-1)  # [B * W]
    tokens = _take(token, keep).reshape(-1)
    still_open = beams.open
    if ranking.rule == "transformers":
        still_open = beams.open & _transformers_open(ranking, alive_logp, finished_scores, length)
    beams = Beams(_take(seqs, keep), alive_logp, finished_seqs, finished_scores, finished_lengths, still_open)
    return beams, parents, tokens


def _transformers_open(
    ranking: Ranking, alive_logp: jax.Array, finished_scores: jax.Array, length: jax.Array
) -> jax.Array:
    """[B] transformers' rule for an entry to keep taking hypotheses after `length` tokens: its pool is not full
    (early_stopping "true"), and the best alive beam, scored at `length` tokens (at max_new_tokens for "never"
    with length_penalty > 0), beats the pool's worst (a heuristic, not a bound)."""
    full = jnp.all(finished_scores > -jnp.inf, axis=1)
    hypothetical = length
    if ranking.early_stopping == "never":
        hypothetical = jnp.where(ranking.length_penalty > 0, ranking.max_new_tokens, length)
    best = alive_logp[:, 0] / _penalty(ranking, hypothetical)
    worst = jnp.where(full, finished_scores.min(axis=1), -1.0e9)
    still = best > worst
    if ranking.early_stopping == "true":
        still &= ~full
    return still


FIRST_STAGE_ROOM = 32  # new tokens the first stage of the beam loop has cache room for (see `slot_stages`)


def slot_stages(filled_slots: int, slot_count: int) -> list[int]:
    """Cache lengths the beam loop runs with, shortest first: room for `FIRST_STAGE_ROOM` new tokens,
    then doubling, up to the full `slot_count`.

    Reordering the beams copies every self-attention cache slot at every step, so a loop whose
    hypotheses end long before `max_new_tokens` would copy mostly empty slots; each later stage
    starts from the earlier one's cache extended with empty slots.
    """
    stages, room = [], FIRST_STAGE_ROOM
    while filled_slots + room < slot_count:
        stages.append(filled_slots + room)
        room *= 2
    return [*stages, slot_count]


def _entry_done(beams: Beams, ranking: Ranking) -> jax.Array:
    """[B] True where the entry is finished: gnmt, no alive beam can beat the worst of a full pool;
    transformers, the entry no longer takes hypotheses."""
    if ranking.rule == "transformers":
        return ~beams.open
    worst_finished = beams.finished_scores.min(axis=1)  # -inf while the pool is not full
    best_possible = beams.alive_logp.max(axis=1) / length_penalty(float(ranking.max_new_tokens), ranking.alpha)
    return worst_finished > best_possible


def beam_loop(
    params: Any, state: DecodeState, prefix: jax.Array, *, beam_size: int, ranking: Ranking, pad_id: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Beam search from a prefilled state over B rows (prefix [B, K]: see `rules`)
    -> (sequences [B, W, N], scores [B, W], lengths [B, W])."""
    batch, width, max_new_tokens = state.logits.shape[0], beam_size, ranking.max_new_tokens
    stages = slot_stages(state.filled_slots, slot_count(state.cache, state.slot_axes))
    state = dataclasses.replace(state, cache=resize_slots(state.cache, state.slot_axes, stages[0])).repeat(width)
    prefix = jnp.repeat(prefix, width, axis=0)  # [B * W, K]
    empty = jnp.full((batch, width, max_new_tokens), pad_id, jnp.int32)
    first_alive = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)  # copies of one beam: only one is live
    beams = Beams(
        empty,
        jnp.broadcast_to(first_alive, (batch, width)),
        empty,
        jnp.full((batch, width), -jnp.inf),
        jnp.zeros((batch, width), jnp.int32),
        jnp.ones((batch,), bool),
    )
    beams, parents, tokens = _select(jnp.array(0, jnp.int32), state.logits, beams, ranking, prefix)

    def keep_going(carry: tuple) -> jax.Array:
        step, beams = carry[0], carry[1]
        return (step < max_new_tokens) & ~jnp.all(_entry_done(beams, ranking))

    def extend(carry: tuple) -> tuple:
        step, beams, parents, tokens, cache, positions = carry
        cache = gather_beams(cache, state.batch_axes, parents)
        logits, cache = state.step(params, cache, tokens, positions)
        beams, parents, tokens = _select(step, logits, beams, ranking, prefix)
        return step + 1, beams, parents, tokens, cache, positions + 1

    carry = (jnp.array(1, jnp.int32), beams, parents, tokens, state.cache, state.positions)
    for length in stages:  # one loop per cache length; step s writes slot filled_slots + s - 1
        step, beams, parents, tokens, cache, positions = carry
        carry = (step, beams, parents, tokens, resize_slots(cache, state.slot_axes, length), positions)
        last_step = length - state.filled_slots
        carry = jax.lax.while_loop(lambda c, last=last_step: keep_going(c) & (c[0] <= last), extend, carry)
    steps, beams = carry[:2]
    alive_scores = beams.alive_logp / _penalty(ranking, steps)
    if ranking.rule == "transformers":  # the last step already moved the best alive beams to the pool
        alive_scores = jnp.full_like(alive_scores, -jnp.inf)
    scores, seqs, lengths = _keep_best(
        jnp.concatenate([beams.finished_scores, alive_scores], axis=1),
        jnp.concatenate([beams.finished_seqs, beams.alive_seqs], axis=1),
        jnp.concatenate([beams.finished_lengths, jnp.full((batch, width), steps, jnp.int32)], axis=1),
        width,
    )
    return seqs, scores, lengths


_STATIC = ("config", "beam_size", "pad_id", "rule", "early_stopping", "no_repeat_ngram_size", "max_new_tokens")


@functools.partial(jax.jit, static_argnames=_STATIC, compiler_options=LOOP_COMPILER_OPTIONS)
def _beam_search(params, inputs, alpha, exponent, rules, *, config, beam_size, pad_id, rule, early_stopping, **static):
    """Prefill (either family) then the beam loop: one compiled program."""
    ranking = Ranking(rule, early_stopping, alpha, exponent, rules, **static)
    state = prefill(config, params, inputs, ranking.max_new_tokens)
    prefix = prefix_tokens(config, inputs)
    return beam_loop(params, state, prefix, beam_size=beam_size, ranking=ranking, pad_id=pad_id)


def beam_tokens(
    config: ModelConfig, params: Any, inputs: DecodeInputs, search: SearchConfig, eos_id: int | None, pad_id: int
) -> BeamResult:
    """Beam search from checked `inputs` with search's beam settings and token rules (its method is ignored)."""
    search = dataclasses.replace(search, method="beam")
    search.check_model(config)
    checks.check_id(config, "eos_id", eos_id)
    checks.check_id(config, "pad_id", pad_id, required=True)
    options = dict(
        max_new_tokens=checks.required_new_tokens(search),
        beam_size=search.beam_size,
        pad_id=int(pad_id),
        rule=search.length_rule,
        early_stopping=search.early_stopping,
        no_repeat_ngram_size=search.no_repeat_ngram_size,
    )
    dynamic = (jnp.float32(search.alpha), jnp.float32(search.length_penalty), rules_of(search, eos_id))  # traced
    seqs, scores, lens = _beam_search(params, inputs, *dynamic, config=config, **options)
    return BeamResult(np.asarray(seqs), np.asarray(scores), np.asarray(lens))


def beam_search(
    config: ModelConfig,
    params: Any,
    inputs: Sequence[Sequence[int]] | np.ndarray,
    search: SearchConfig | None = None,
    *,
    eos_id: int | None = None,
    pad_id: int = 0,
    lengths: Sequence[int] | np.ndarray | None = None,
    source_valid: np.ndarray | None = None,
    bos_id: int | None = None,
    forced_bos_id: int | None = None,
    **settings: Any,
) -> BeamResult:
    """Beam search for a decoder-only model (inputs = prompts, as in `generate`, with optional `lengths`)
    or an encoder-decoder (inputs = source [B, S] with `source_valid` [B, S], the decoder's `bos_id` and an
    optional `forced_bos_id`, as in `translate`).

    search / settings: a `SearchConfig` and changes to it (max_new_tokens, beam_size, alpha, length_rule,
    length_penalty, early_stopping, no_repeat_ngram_size, min_new_tokens, forced_eos_id).
    Returns a `BeamResult` with W = beam_size hypotheses per row, best first.
    eos_id None: no hypothesis ends early; all have length max_new_tokens.
    """
    search = SearchConfig.of(search, **settings)
    max_new_tokens = checks.required_new_tokens(search)
    if config.family == "decoder_only":
        decode_inputs = checks.prompt_inputs(config, inputs, lengths, pad_id, max_new_tokens)
    elif config.family == "encoder_decoder":
        decode_inputs = checks.source_inputs(
            config, np.asarray(inputs), source_valid, bos_id, max_new_tokens, forced_bos_id
        )
    else:
        raise InputError(f"beam_search() needs a decoder; family={config.family!r} has none.")
    return beam_tokens(config, params, decode_inputs, search, eos_id, pad_id)
