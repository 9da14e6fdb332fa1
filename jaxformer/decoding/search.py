"""Greedy decoding and seeded sampling over the KV cache: `generate` (decoder-only) and `translate` (encoder-decoder).

One jitted call does the prefill and then a `lax.while_loop` that feeds each
chosen token back, one cache slot per step, until `max_new_tokens` are written
or every row has produced EOS. Tokens after a row's EOS are `pad_id`. Sampling
uses `fold_in(PRNGKey(seed), step)` per step, so a fixed seed reproduces the output.

Legend: B batch, P prompt length, S source length, N max new tokens, V vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding import inputs as checks
from jaxformer.decoding.beam import beam_tokens
from jaxformer.decoding.rules import Rules, apply_rules, prefix_tokens, rules_of
from jaxformer.decoding.sampling import greedy_tokens, sample_logits
from jaxformer.decoding.steps import LOOP_COMPILER_OPTIONS, DecodeInputs, DecodeState, prefill


def token_loop(
    params: Any,
    state: DecodeState,
    rng: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    rules: Rules,
    prefix: jax.Array,
    *,
    max_new_tokens: int,
    method: str,
    top_k: int,
    use_top_p: bool,
    no_repeat_ngram_size: int,
    pad_id: int,
) -> jax.Array:
    """Greedy or sampled tokens [B, N] from a prefilled state (prefix [B, K]: see `rules`; traceable)."""
    eos_id = rules.eos_id

    def choose(logits: jax.Array, step: jax.Array, out: jax.Array, done: jax.Array | None = None) -> jax.Array:
        history = jnp.concatenate([prefix, out], axis=1)  # [B, K + N]
        logits = apply_rules(
            logits,
            step,
            history,
            prefix.shape[1] + step,
            rules,
            no_repeat_ngram_size=no_repeat_ngram_size,
            max_new_tokens=max_new_tokens,
        )
        if method == "greedy":
            return greedy_tokens(logits)
        key = jax.random.fold_in(rng, step)
        return sample_logits(logits, key, temperature, top_k, top_p, use_top_p, ignored=done)

    def ended(tokens: jax.Array) -> jax.Array:
        return tokens == eos_id  # eos_id -1: never

    out = jnp.full((state.logits.shape[0], max_new_tokens), pad_id, jnp.int32)
    first = choose(state.logits, jnp.array(0, jnp.int32), out)  # [B]
    out = out.at[:, 0].set(first)

    def keep_going(carry: tuple) -> jax.Array:
        step, done = carry[0], carry[3]
        return (step < max_new_tokens) & ~jnp.all(done)

    def extend(carry: tuple) -> tuple:
        step, previous, out, done, cache, positions = carry
        logits, cache = state.step(params, cache, previous, positions)
        tokens = jnp.where(done, pad_id, choose(logits, step, out, done))
        out = jax.lax.dynamic_update_slice(out, tokens[:, None], (0, step))
        return step + 1, tokens, out, done | ended(tokens), cache, positions + 1

    carry = (jnp.array(1, jnp.int32), first, out, ended(first), state.cache, state.positions)
    return jax.lax.while_loop(keep_going, extend, carry)[2]


_STATIC = ("config", "max_new_tokens", "method", "top_k", "use_top_p", "no_repeat_ngram_size", "pad_id")


@functools.partial(jax.jit, static_argnames=_STATIC, compiler_options=LOOP_COMPILER_OPTIONS)
def _token_search(params, inputs, rng, temperature, top_p, rules, *, config, max_new_tokens, **options):
    """Prefill (either family) then the greedy/sampling loop: one compiled program."""
    state = prefill(config, params, inputs, max_new_tokens)
    prefix = prefix_tokens(config, inputs)
    return token_loop(params, state, rng, temperature, top_p, rules, prefix, max_new_tokens=max_new_tokens, **options)


def _loop_options(
    config: ModelConfig, search: SearchConfig, eos_id: int | None, pad_id: int
) -> tuple[dict[str, Any], tuple[jax.Array, ...]]:
    """Static options and traced (rng, temperature, top_p, rules) of the token loop."""
    checks.check_id(config, "eos_id", eos_id)
    checks.check_id(config, "pad_id", pad_id, required=True)
    search.check_model(config)
    sampling = search.method == "sample"
    options = dict(
        max_new_tokens=checks.required_new_tokens(search),
        method=search.method,
        top_k=search.top_k if sampling else 0,
        use_top_p=sampling and search.top_p < 1.0,
        no_repeat_ngram_size=search.no_repeat_ngram_size,
        pad_id=int(pad_id),
    )
    rules = rules_of(search, eos_id)  # traced, so a new EOS id needs no recompilation
    dynamic = (jax.random.PRNGKey(search.seed), jnp.float32(search.temperature), jnp.float32(search.top_p), rules)
    return options, dynamic


def _search(
    config: ModelConfig, params: Any, inputs: DecodeInputs, search: SearchConfig, eos_id: int | None, pad_id: int
) -> np.ndarray:
    """Best tokens [B, N] of `inputs` (checked) by the configured method."""
    if search.method == "beam":
        return beam_tokens(config, params, inputs, search, eos_id, pad_id).sequences[:, 0]
    options, dynamic = _loop_options(config, search, eos_id, pad_id)
    return np.asarray(_token_search(params, inputs, *dynamic, config=config, **options))


def generate(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]] | np.ndarray,
    lengths: Sequence[int] | np.ndarray | None = None,
    search: SearchConfig | None = None,
    *,
    eos_id: int | None = None,
    pad_id: int = 0,
    **settings: Any,
) -> np.ndarray:
    """Continue each prompt of a decoder-only model. Returns new tokens [B, max_new_tokens] (pad after EOS).

    prompts: list of token-id lists (any lengths >= 1), or an int array [B, P] whose
    row b holds `lengths[b]` real tokens first (all P when lengths is None).
    search: a `SearchConfig`; `settings` (its field names: max_new_tokens, method, temperature, top_k,
    top_p, seed, beam_size, alpha) change it. method "beam" returns the best of `beam_search`.
    eos_id None: never stop early. Needs longest prompt + max_new_tokens <= config.max_len.
    """
    checks.check_family(config, "decoder_only", "generate")
    search = SearchConfig.of(search, **settings)
    inputs = checks.prompt_inputs(config, prompts, lengths, pad_id, checks.required_new_tokens(search))
    return _search(config, params, inputs, search, eos_id, pad_id)


def translate(
    config: ModelConfig,
    params: Any,
    source: np.ndarray,
    source_valid: np.ndarray | None = None,
    search: SearchConfig | None = None,
    *,
    bos_id: int,
    eos_id: int | None = None,
    pad_id: int = 0,
    forced_bos_id: int | None = None,
    **settings: Any,
) -> np.ndarray:
    """Decode each source row [B, S] (valid [B, S], e.g. right padding) with an encoder-decoder model.

    The encoder runs once; the decoder starts from `bos_id`. Returns the output
    tokens [B, max_new_tokens] (BOS not included, pad after EOS). search/settings as in `generate`.
    forced_bos_id: the first output token of every row (transformers' `forced_bos_token_id`, e.g. mBART-50's
    target language), with log-probability 0 in beam scores, as transformers counts it.
    """
    checks.check_family(config, "encoder_decoder", "translate")
    search = SearchConfig.of(search, **settings)
    new_tokens = checks.required_new_tokens(search)
    inputs = checks.source_inputs(config, source, source_valid, bos_id, new_tokens, forced_bos_id)
    return _search(config, params, inputs, search, eos_id, pad_id)
