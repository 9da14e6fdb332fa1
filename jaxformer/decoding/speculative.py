"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes
k tokens, the target scores all k + 1 positions in one cached forward pass.

One round, for every row (`last` is the newest output token, not yet in either cache):

    draft:  feed last, d_1, ..., d_k one at a time -> proposals d_1..d_k   (k + 1 one-token steps;
            the last only writes d_k's keys/values, its logits are unused)
    target: feed [last, d_1, ..., d_k] at once      -> logits [B, k + 1, V]
    accept: greedy  - the longest prefix where d_i equals the target's argmax, then the target's token;
            sample  - d_i with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection a token
                      from norm(max(0, p_i - q_i)); after k acceptances a token from p_k,
            so greedy output is plain greedy's by construction and sampled output follows the target's
            distribution p (softmax(logits / temperature) after its top-k / top-p filters).

Rows move in lock-step: a round keeps n = min over unfinished rows of their accepted counts, and
every row appends n + 1 tokens (row b's own accepted drafts are the target's own choices, so for a
row that accepted more than n, its token n is its accepted d_{n+1}: still a draw from p). Both caches
then roll back to the same slot count (the shared `cache_index` / `position_index` entries are reset;
slots after it hold stale keys that the causal mask hides until they are overwritten). The whole
search is one jitted program: prefill of both models, then a `lax.while_loop` over rounds.

The acceptance rate reported is each unfinished row's own accepted count over its k proposals,
summed over rows and rounds.

Legend: B batch, P prompt length, N max new tokens, k draft tokens, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import models
from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding import inputs as checks
from jaxformer.decoding.cache import Cache
from jaxformer.decoding.sampling import apply_top_k, apply_top_p, draw_tokens, greedy_tokens
from jaxformer.decoding.steps import LOOP_COMPILER_OPTIONS, DecodeInputs, Stepper, prefill_decoder_only
from jaxformer.errors import InputError

SPECULATIVE_METHODS = ("greedy", "sample")
MAX_DRAFT_TOKENS = 64
SHARED_INDICES = ("cache_index", "position_index")  # cache entries counting the slots written so far


@dataclasses.dataclass(frozen=True)
class SpeculativeResult:
    """tokens [B, N] (pad after EOS); accepted / proposed draft tokens over all rounds; rounds run."""

    tokens: np.ndarray
    accepted: int
    proposed: int
    rounds: int

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over proposed ones (0.0 when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else 0.0


def filtered_logits(logits: jax.Array, temperature: jax.Array, top_k: int, top_p: jax.Array, use_top_p: bool):
    """logits [..., V] -> the sampling distribution's logits [..., V]: / temperature, then top-k, then top-p
    (as `sampling.sample_logits` draws); -inf for tokens left out."""
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1]).astype(jnp.float32) / temperature
    flat = apply_top_k(flat, top_k)
    if use_top_p:
        flat = apply_top_p(flat, top_p)
    return flat.reshape(shape)


def accept_greedy(drafts: jax.Array, target_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """drafts [B, k], target logits [B, k + 1, V] -> (accepted count [B] in 0..k, tokens [B, k + 1]).

    tokens are the target's argmax at each position: the first `count + 1` are the row's output.
    """
    batch, width, vocab = target_logits.shape
    chosen = greedy_tokens(target_logits.reshape(batch * width, vocab)).reshape(batch, width)
    agree = drafts == chosen[:, :-1]  # [B, k]
    return jnp.sum(jnp.cumprod(agree, axis=1), axis=1).astype(jnp.int32), chosen


def accept_sampled(
    rng: jax.Array, drafts: jax.Array, draft_probs: jax.Array, target_probs: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The rejection rule. drafts [B, k] drawn from draft_probs q [B, k, V]; target_probs p [B, k + 1, V].

    Returns (accepted count [B] in 0..k, tokens [B, k + 1]): token i is d_{i+1} where i < count, and at
    i = count a draw from norm(max(0, p_i - q_i)) (i < k) or from p_k (i = k). Any prefix of the first
    count + 1 tokens is a draw from the target (each token from p given the ones before it).
    """
    batch, k = drafts.shape
    accept_key, fix_key = jax.random.split(rng)
    p_draft = jnp.take_along_axis(target_probs[:, :k], drafts[..., None], axis=-1)[..., 0]  # [B, k]
    q_draft = jnp.take_along_axis(draft_probs, drafts[..., None], axis=-1)[..., 0]
    u = jax.random.uniform(accept_key, (batch, k))
    accepted = u * q_draft < p_draft  # u < min(1, p/q); q_draft > 0 for a drawn token
    count = jnp.sum(jnp.cumprod(accepted, axis=1), axis=1).astype(jnp.int32)
    residual = jnp.maximum(target_probs[:, :k] - draft_probs, 0.0)  # [B, k, V]
    # p == q leaves nothing (rejection then has probability 0): fall back to p to stay finite
    residual = jnp.where(jnp.sum(residual, axis=-1, keepdims=True) > 0, residual, target_probs[:, :k])
    fix = jnp.concatenate([residual, target_probs[:, k:]], axis=1)  # [B, k + 1, V]
    fixes = draw_tokens(fix_key, jnp.log(fix.reshape(batch * (k + 1), -1))).reshape(batch, k + 1)  # log 0 = -inf
    position = jnp.arange(k + 1)[None, :]
    padded = jnp.concatenate([drafts, drafts[:, :1]], axis=1)  # column k is never a draft (position k >= count)
    return count, jnp.where(position < count[:, None], padded, fixes)


def reset_slots(cache: Cache, filled: jax.Array) -> Cache:
    """The cache with its shared slot counters set to `filled` (the rollback after a rejection)."""

    def reset(path: tuple, x: jax.Array) -> jax.Array:
        if getattr(path[-1], "key", None) in SHARED_INDICES:
            return jnp.full(x.shape, filled, x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(reset, cache)


def verify(config: ModelConfig, params: Any, cache: Cache, tokens: jax.Array, positions: jax.Array):
    """Feed tokens [B, T] at positions [B, T] to the decode-mode model at once -> (logits [B, T, V] f32, cache)."""
    model = models.build(config, decode=True)
    logits, updates = model.apply(
        {"params": params, "cache": cache},
        tokens,
        positions=positions,
        valid=jnp.ones(tokens.shape, jnp.bool_),
        mutable=["cache"],
    )
    return logits.astype(jnp.float32), updates["cache"]


def speculative_loop(
    params: Any,
    draft_params: Any,
    inputs: DecodeInputs,
    rng: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    eos_id: jax.Array,
    *,
    config: ModelConfig,
    draft_config: ModelConfig,
    max_new_tokens: int,
    draft_tokens: int,
    method: str,
    top_k: int,
    use_top_p: bool,
    pad_id: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Prefill both models, then rounds until N tokens or every row's EOS (traceable).

    Returns (tokens [B, N], accepted draft tokens, proposed draft tokens, rounds), the last three int32 scalars.
    """
    k, total = draft_tokens, max_new_tokens
    prompt_length = inputs.tokens.shape[1]
    cache_length = prompt_length + total + k - 1  # the last round may write k slots past the N-th token
    target = prefill_decoder_only(config, params, inputs.tokens, inputs.valid, inputs.positions, cache_length)
    draft = prefill_decoder_only(
        draft_config, draft_params, inputs.tokens, inputs.valid, inputs.positions, cache_length
    )
    draft_step = Stepper(draft_config)
    sampling = method == "sample"
    first_key, loop_key = jax.random.split(rng)

    def distribution(logits: jax.Array) -> jax.Array:
        return jax.nn.softmax(filtered_logits(logits, temperature, top_k, top_p, use_top_p), axis=-1)

    if sampling:
        first = draw_tokens(first_key, filtered_logits(target.logits, temperature, top_k, top_p, use_top_p))
    else:
        first = greedy_tokens(target.logits)
    batch = first.shape[0]
    out = jnp.full((batch, total + k + 1), pad_id, jnp.int32).at[:, 0].set(first)
    ended = first == eos_id

    def propose(key: jax.Array, cache: Cache, last: jax.Array, positions: jax.Array):
        """k + 1 draft steps from `last` -> (drafts [B, k], their probabilities [B, k, V] (sampling), cache)."""

        def one(carry: tuple, step_key: jax.Array) -> tuple:
            cache, token, position = carry
            logits, cache = draft_step(draft_params, cache, token, position)
            if sampling:
                scaled = filtered_logits(logits, temperature, top_k, top_p, use_top_p)
                chosen = draw_tokens(step_key, scaled)
                probs = jax.nn.softmax(scaled, axis=-1)
            else:
                chosen, probs = greedy_tokens(logits), jnp.zeros((batch, 0), jnp.float32)
            return (cache, chosen, position + 1), (chosen, probs)

        (cache, _, _), (chosen, probs) = jax.lax.scan(one, (cache, last, positions), jax.random.split(key, k + 1))
        drafts = chosen[:k].T  # [B, k]
        return drafts, jnp.swapaxes(probs[:k], 0, 1), cache

    def keep_going(carry: tuple) -> jax.Array:
        count, done = carry[1], carry[4]
        return (count < total) & ~jnp.all(done)

    def one_round(carry: tuple) -> tuple:
        rounds, count, last, out, done, target_cache, draft_cache, positions, accepted, proposed = carry
        filled = prompt_length + count - 1  # slots holding the prompt and every output token but `last`
        key = jax.random.fold_in(loop_key, rounds)
        draft_key, accept_key = jax.random.split(key)
        drafts, draft_probs, draft_cache = propose(draft_key, draft_cache, last, positions)
        fed = jnp.concatenate([last[:, None], drafts], axis=1)  # [B, k + 1]
        logits, target_cache = verify(config, params, target_cache, fed, positions[:, None] + jnp.arange(k + 1))
        if sampling:
            row_accepted, tokens = accept_sampled(accept_key, drafts, draft_probs, distribution(logits))
        else:
            row_accepted, tokens = accept_greedy(drafts, logits)
        keep = jnp.min(jnp.where(done, k, row_accepted))  # lock-step: every row appends keep + 1 tokens
        column = jnp.arange(k + 1)[None, :]
        is_eos = (tokens == eos_id) & (column <= keep)
        after_eos = jnp.cumsum(is_eos, axis=1) - is_eos > 0
        written = jnp.where(done[:, None] | after_eos, pad_id, tokens)
        out = jax.lax.dynamic_update_slice(out, written, (0, count))
        accepted = accepted + jnp.sum(jnp.where(done, 0, row_accepted))
        proposed = proposed + k * jnp.sum(~done)
        new_filled = filled + keep + 1
        return (
            rounds + 1,
            count + keep + 1,
            tokens[:, keep],
            out,
            done | jnp.any(is_eos, axis=1),
            reset_slots(target_cache, new_filled),
            reset_slots(draft_cache, new_filled),
            positions + keep + 1,
            accepted,
            proposed,
        )

    zero = jnp.array(0, jnp.int32)
    carry = (zero, jnp.array(1, jnp.int32), first, out, ended, target.cache, draft.cache, target.positions, zero, zero)
    rounds, count, _, out, _, _, _, _, accepted, proposed = jax.lax.while_loop(keep_going, one_round, carry)
    out = jnp.where(jnp.arange(total)[None, :] < count, out[:, :total], pad_id)
    return out, accepted, proposed, rounds


_STATIC = ("config", "draft_config", "max_new_tokens", "draft_tokens", "method", "top_k", "use_top_p", "pad_id")
_speculative_search = functools.partial(jax.jit, static_argnames=_STATIC, compiler_options=LOOP_COMPILER_OPTIONS)(
    speculative_loop
)


def check_draft(config: ModelConfig, draft_config: ModelConfig) -> None:
    """The draft must be a decoder-only model over the target's vocabulary (one-line InputError otherwise)."""
    if draft_config.family != "decoder_only":
        raise InputError(f"the draft model is {draft_config.family}; speculative decoding needs a decoder-only draft.")
    if draft_config.vocab_size != config.vocab_size:
        raise InputError(
            f"the draft's vocabulary has {draft_config.vocab_size} ids but the target's has {config.vocab_size}; "
            "use a draft trained with the target's tokenizer."
        )


def speculative_generate(
    config: ModelConfig,
    params: Any,
    draft_config: ModelConfig,
    draft_params: Any,
    prompts: Sequence[Sequence[int]] | np.ndarray,
    lengths: Sequence[int] | np.ndarray | None = None,
    search: SearchConfig | None = None,
    *,
    draft_tokens: int = 4,
    eos_id: int | None = None,
    pad_id: int = 0,
    **settings: Any,
) -> SpeculativeResult:
    """`decoding.generate` of the target (config, params), sped up by a draft (draft_config, draft_params).

    prompts / lengths / search / settings / eos_id / pad_id as in `generate` (method greedy or sample).
    draft_tokens: k, the proposals per round (static: each k compiles once). Greedy output equals
    `generate(method="greedy")` token for token; sampled output follows the same distribution as
    `generate(method="sample")` (not the same draws). Needs longest prompt + max_new_tokens + k - 1 <=
    max_len of both models.
    """
    checks.check_family(config, "decoder_only", "speculative_generate")
    check_draft(config, draft_config)
    search = SearchConfig.of(search, **settings)
    if search.method not in SPECULATIVE_METHODS:
        raise InputError(f"method={search.method!r} has no speculative form; use one of {list(SPECULATIVE_METHODS)}.")
    if isinstance(draft_tokens, bool) or not isinstance(draft_tokens, (int, np.integer)):
        raise InputError(f"draft_tokens={draft_tokens!r} must be an integer in [1, {MAX_DRAFT_TOKENS}].")
    if not 1 <= draft_tokens <= MAX_DRAFT_TOKENS:
        raise InputError(f"draft_tokens={draft_tokens} must be in [1, {MAX_DRAFT_TOKENS}].")
    checks.check_id(config, "eos_id", eos_id)
    checks.check_id(config, "pad_id", pad_id, required=True)
    search.check_model(config)
    new_tokens = checks.required_new_tokens(search)
    inputs = checks.prompt_inputs(config, prompts, lengths, pad_id, new_tokens)
    for name, model_config in (("target", config), ("draft", draft_config)):
        _check_room(model_config, name, inputs.tokens.shape[1], new_tokens, int(draft_tokens))
    sampling = search.method == "sample"
    tokens, accepted, proposed, rounds = _speculative_search(
        params,
        draft_params,
        inputs,
        jax.random.PRNGKey(search.seed),
        jnp.float32(search.temperature),
        jnp.float32(search.top_p),
        jnp.int32(-1 if eos_id is None else eos_id),
        config=config,
        draft_config=draft_config,
        max_new_tokens=new_tokens,
        draft_tokens=int(draft_tokens),
        method=search.method,
        top_k=search.top_k if sampling else 0,
        use_top_p=sampling and search.top_p < 1.0,
        pad_id=int(pad_id),
    )
    return SpeculativeResult(np.asarray(tokens), int(accepted), int(proposed), int(rounds))


def _check_room(config: ModelConfig, name: str, prompt_length: int, new_tokens: int, draft_tokens: int) -> None:
    """The last round feeds up to k - 1 positions past the N-th new token."""
    total = prompt_length + new_tokens + draft_tokens - 1
    if total > config.max_len:
        raise InputError(
            f"prompt length {prompt_length} + max_new_tokens {new_tokens} + draft_tokens {draft_tokens} - 1 = "
            f"{total} exceeds the {name} model's max_len={config.max_len}; shorten the prompt or ask for fewer "
            "tokens or draft tokens."
        )
