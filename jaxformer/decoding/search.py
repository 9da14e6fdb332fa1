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

from jaxformer.config import ModelConfig
from jaxformer.decoding import inputs as checks
from jaxformer.decoding.beam import beam_search
from jaxformer.decoding.sampling import greedy_tokens, sample_logits
from jaxformer.decoding.steps import LOOP_COMPILER_OPTIONS, DecodeState, prefill_decoder_only, prefill_encoder_decoder


def token_loop(
    params: Any,
    state: DecodeState,
    rng: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    max_new_tokens: int,
    method: str,
    top_k: int,
    use_top_p: bool,
    eos_id: jax.Array,
    pad_id: int,
) -> jax.Array:
    """Greedy or sampled tokens [B, N] from a prefilled state (traceable; used inside jit)."""

    def choose(logits: jax.Array, step: jax.Array, done: jax.Array | None = None) -> jax.Array:
        if method == "greedy":
            return greedy_tokens(logits)
        key = jax.random.fold_in(rng, step)
        return sample_logits(logits, key, temperature, top_k, top_p, use_top_p, ignored=done)

    def ended(tokens: jax.Array) -> jax.Array:
        return tokens == eos_id  # eos_id -1: never

    first = choose(state.logits, jnp.array(0, jnp.int32))  # [B]
    out = jnp.full((first.shape[0], max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)

    def keep_going(carry: tuple) -> jax.Array:
        step, done = carry[0], carry[3]
        return (step < max_new_tokens) & ~jnp.all(done)

    def extend(carry: tuple) -> tuple:
        step, previous, out, done, cache, positions = carry
        logits, cache = state.step(params, cache, previous, positions)
        tokens = jnp.where(done, pad_id, choose(logits, step, done))
        out = jax.lax.dynamic_update_slice(out, tokens[:, None], (0, step))
        return step + 1, tokens, out, done | ended(tokens), cache, positions + 1

    carry = (jnp.array(1, jnp.int32), first, out, ended(first), state.cache, state.positions)
    return jax.lax.while_loop(keep_going, extend, carry)[2]


_STATIC = ("config", "max_new_tokens", "method", "top_k", "use_top_p", "pad_id")


@functools.partial(jax.jit, static_argnames=_STATIC, compiler_options=LOOP_COMPILER_OPTIONS)
def _generate_jit(
    params, tokens, valid, positions, rng, temperature, top_p, eos_id, *, config, max_new_tokens, **options
):
    state = prefill_decoder_only(config, params, tokens, valid, positions, tokens.shape[1] + max_new_tokens - 1)
    return token_loop(params, state, rng, temperature, top_p, eos_id=eos_id, max_new_tokens=max_new_tokens, **options)


@functools.partial(jax.jit, static_argnames=_STATIC, compiler_options=LOOP_COMPILER_OPTIONS)
def _translate_jit(
    params, source, source_valid, bos_id, rng, temperature, top_p, eos_id, *, config, max_new_tokens, **options
):
    state = prefill_encoder_decoder(config, params, source, source_valid, bos_id, max_new_tokens)
    return token_loop(params, state, rng, temperature, top_p, eos_id=eos_id, max_new_tokens=max_new_tokens, **options)


def _loop_options(
    config: ModelConfig,
    method: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_id: int | None,
    pad_id: int,
    seed: int,
) -> tuple[dict[str, Any], tuple[jax.Array, ...]]:
    """Validate the shared settings; return (static options, traced (rng, temperature, top_p, eos_id))."""
    checks.check_method(method)
    checks.check_max_new_tokens(max_new_tokens)
    checks.check_id(config, "eos_id", eos_id)
    checks.check_id(config, "pad_id", pad_id, required=True)
    checks.check_sampling(temperature, top_k, top_p, sampling=method == "sample")
    options = dict(
        max_new_tokens=int(max_new_tokens),
        method=method,
        top_k=int(top_k) if method == "sample" else 0,
        use_top_p=method == "sample" and float(top_p) < 1.0,
        pad_id=int(pad_id),
    )
    eos = jnp.int32(-1 if eos_id is None else eos_id)  # traced, so a new EOS id needs no recompilation
    dynamic = (jax.random.PRNGKey(seed), jnp.float32(temperature), jnp.float32(top_p), eos)
    return options, dynamic


def generate(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]] | np.ndarray,
    lengths: Sequence[int] | np.ndarray | None = None,
    *,
    max_new_tokens: int,
    method: str = "greedy",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    seed: int = 0,
    beam_size: int = 4,
    alpha: float = 0.6,
) -> np.ndarray:
    """Continue each prompt of a decoder-only model. Returns new tokens [B, max_new_tokens] (pad after EOS).

    prompts: list of token-id lists (any lengths >= 1), or an int array [B, P] whose
    row b holds `lengths[b]` real tokens first (all P when lengths is None).
    method: "greedy" (argmax), "sample" (temperature, top_k (0 = off), top_p (1 = off),
    seed) or "beam" (the best of `beam_search` with beam_size and length penalty alpha).
    eos_id None: never stop early. Needs longest prompt + max_new_tokens <= config.max_len.
    """
    checks.check_family(config, "decoder_only", "generate")
    options, dynamic = _loop_options(config, method, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id, seed)
    tokens, valid = checks.pack_prompts(prompts, lengths, pad_id)
    checks.check_token_ids(config, tokens, valid, "prompts")
    checks.check_total_length(config, tokens.shape[1], max_new_tokens)
    if method == "beam":
        result = beam_search(
            config,
            params,
            prompts,
            lengths=lengths,
            max_new_tokens=max_new_tokens,
            beam_size=beam_size,
            alpha=alpha,
            eos_id=eos_id,
            pad_id=pad_id,
        )
        return result.sequences[:, 0]
    positions = checks.positions_from_valid(valid)
    out = _generate_jit(params, tokens, valid, positions, *dynamic, config=config, **options)
    return np.asarray(out)


def translate(
    config: ModelConfig,
    params: Any,
    source: np.ndarray,
    source_valid: np.ndarray | None = None,
    *,
    bos_id: int,
    max_new_tokens: int,
    eos_id: int | None = None,
    method: str = "greedy",
    beam_size: int = 4,
    alpha: float = 0.6,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    pad_id: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Decode each source row [B, S] (valid [B, S], e.g. right padding) with an encoder-decoder model.

    The encoder runs once; the decoder starts from `bos_id`. Returns the output
    tokens [B, max_new_tokens] (BOS not included, pad after EOS). method as in `generate`.
    """
    checks.check_family(config, "encoder_decoder", "translate")
    options, dynamic = _loop_options(config, method, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id, seed)
    checks.check_id(config, "bos_id", bos_id, required=True)
    source = np.asarray(source)
    valid = checks.check_source(config, source, source_valid)
    checks.check_target_length(config, max_new_tokens)
    if method == "beam":
        result = beam_search(
            config,
            params,
            source,
            source_valid=valid,
            bos_id=bos_id,
            max_new_tokens=max_new_tokens,
            beam_size=beam_size,
            alpha=alpha,
            eos_id=eos_id,
            pad_id=pad_id,
        )
        return result.sequences[:, 0]
    out = _translate_jit(params, source.astype(np.int32), valid, jnp.int32(bos_id), *dynamic, config=config, **options)
    return np.asarray(out)
