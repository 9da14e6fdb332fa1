"""Model adapters for the search loops: one prefill call, then one call per new token.

Both families are reduced to the same interface, used inside `jax.jit`:

    prefill(...) -> DecodeState(logits [B, V] for the first new token, cache, positions [B])
    step(params, cache, tokens [B], positions [B]) -> (logits [B, V], cache)

Decoder-only: the left-padded prompt [B, P] runs through the model once (its keys
and values fill cache slots 0..P-1); each new token then takes the next slot.
Encoder-decoder: the source is encoded once; the first decoder call feeds BOS
together with `encoded`, which caches every layer's cross-attention keys/values,
and later calls pass `encoded=None`.

`prefill(config, params, inputs, max_new_tokens)` picks the family's prefill from `DecodeInputs`
(a pytree, so one jitted search function serves both families).

Legend: B batch, P prompt length, S source length, D model width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import models
from jaxformer.config import ModelConfig
from jaxformer.decoding.cache import Cache, cache_batch_axes, cache_slot_axes, init_cache, repeat_cache

# XLA:CPU's default copy insertion copies every layer's KV cache at every step of the token loop
# (it cannot see that the cache's in-place update comes after the matmuls that read it); the
# region analysis removes those copies (measured in benchmarks/results/PERFORMANCE.md).
# A debug option other backends ignore.
LOOP_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


@dataclasses.dataclass(frozen=True)
class Stepper:
    """Feeds one token per row to a decode-mode model. `source_valid` [B, S] for encoder-decoders, else None."""

    config: ModelConfig
    source_valid: jax.Array | None = None

    @property
    def model(self) -> nn.Module:
        return models.build(self.config, decode=True)

    def __call__(self, params: Any, cache: Cache, tokens: jax.Array, positions: jax.Array) -> tuple[jax.Array, Cache]:
        """tokens [B], positions [B] -> (logits [B, V] float32, updated cache)."""
        variables = {"params": params, "cache": cache}
        tokens, positions = tokens[:, None], positions[:, None]  # [B, 1]
        if self.config.family == "encoder_decoder":
            logits, updates = self.model.apply(
                variables,
                tokens,
                None,
                source_valid=self.source_valid,
                target_positions=positions,
                method="decode_step",
                mutable=["cache"],
            )
        else:
            logits, updates = self.model.apply(variables, tokens, positions=positions, mutable=["cache"])
        return logits[:, -1].astype(jnp.float32), updates["cache"]

    def repeat(self, repeats: int) -> Stepper:
        """The same stepper for a batch whose rows are each repeated `repeats` times (beams)."""
        if self.source_valid is None:
            return self
        return dataclasses.replace(self, source_valid=jnp.repeat(self.source_valid, repeats, axis=0))


@dataclasses.dataclass
class DecodeState:
    """Everything the loop needs after prefill. logits [B, V]; positions [B] of the next token to feed.

    `filled_slots`: self-attention cache slots written by the prefill (the next token goes to this slot).
    """

    logits: jax.Array
    cache: Cache
    positions: jax.Array
    step: Stepper
    batch_axes: Cache
    slot_axes: Cache
    filled_slots: int

    def repeat(self, repeats: int) -> DecodeState:
        """Each row repeated `repeats` times (row b * W + w is a copy of row b)."""
        return DecodeState(
            jnp.repeat(self.logits, repeats, axis=0),
            repeat_cache(self.cache, self.batch_axes, repeats),
            jnp.repeat(self.positions, repeats, axis=0),
            self.step.repeat(repeats),
            self.batch_axes,
            self.slot_axes,
            self.filled_slots,
        )


def prefill_decoder_only(
    config: ModelConfig, params: Any, tokens: jax.Array, valid: jax.Array, positions: jax.Array, cache_length: int
) -> DecodeState:
    """Run the left-padded prompt tokens [B, P] (valid [B, P], positions [B, P]) once through the model."""
    batch = tokens.shape[0]
    cache = init_cache(config, batch, cache_length)
    model = models.build(config, decode=True)
    logits, updates = model.apply(
        {"params": params, "cache": cache},
        tokens,
        positions=positions,
        valid=valid,
        logits_to_keep=1,  # the head over the last position only: the rest are never read
        mutable=["cache"],
    )
    next_positions = positions[:, -1] + 1  # the last column is real for every row (left padding)
    return DecodeState(
        logits[:, -1].astype(jnp.float32),
        updates["cache"],
        next_positions,
        Stepper(config),
        cache_batch_axes(config, cache_length),
        cache_slot_axes(config, cache_length),
        tokens.shape[1],
    )


def prefill_encoder_decoder(
    config: ModelConfig, params: Any, source: jax.Array, source_valid: jax.Array, bos_id: int, cache_length: int
) -> DecodeState:
    """Encode source [B, S] once, then feed BOS with `encoded` (caching cross-attention keys/values)."""
    batch, source_length = source.shape
    model = models.build(config, decode=True)
    encoded = model.apply({"params": params}, source, source_valid, method="encode")  # [B, S, D]
    cache = init_cache(config, batch, cache_length, source_length)
    bos = jnp.full((batch, 1), bos_id, jnp.int32)
    logits, updates = model.apply(
        {"params": params, "cache": cache},
        bos,
        encoded,
        source_valid=source_valid,
        target_positions=jnp.zeros((batch, 1), jnp.int32),
        method="decode_step",
        mutable=["cache"],
    )
    return DecodeState(
        logits[:, -1].astype(jnp.float32),
        updates["cache"],
        jnp.ones((batch,), jnp.int32),
        Stepper(config, source_valid),
        cache_batch_axes(config, cache_length, source_length),
        cache_slot_axes(config, cache_length, source_length),
        1,
    )


class DecodeInputs(NamedTuple):
    """What a search starts from. Decoder-only: left-padded prompt `tokens` [B, P], `valid` [B, P] and
    `positions` [B, P]; encoder-decoder: `tokens` = source [B, S], `valid` = source_valid [B, S] and the
    decoder's `bos_id` (a traced int32 scalar; `positions` is unused and None), and `forced_id`: the token
    every row's first new token is forced to (transformers' `forced_bos_token_id`; -1 = none, traced)."""

    tokens: jax.Array
    valid: jax.Array
    positions: jax.Array | None = None
    bos_id: jax.Array | None = None
    forced_id: jax.Array | None = None


def force_token(logits: jax.Array, token: jax.Array) -> jax.Array:
    """logits [B, V] -> 0 at `token`, -inf elsewhere (its log-probability is then 0); unchanged when token < 0."""
    forced = jnp.where(jnp.arange(logits.shape[-1]) == token, 0.0, -jnp.inf).astype(logits.dtype)
    return jnp.where(token < 0, logits, forced[None, :])


def prefill(config: ModelConfig, params: Any, inputs: DecodeInputs, max_new_tokens: int) -> DecodeState:
    """The family's prefill with a cache long enough for `max_new_tokens` new tokens (traceable)."""
    if config.family == "encoder_decoder":
        state = prefill_encoder_decoder(config, params, inputs.tokens, inputs.valid, inputs.bos_id, max_new_tokens)
        if inputs.forced_id is not None:
            state.logits = force_token(state.logits, inputs.forced_id)
        return state
    cache_length = inputs.tokens.shape[1] + max_new_tokens - 1
    return prefill_decoder_only(config, params, inputs.tokens, inputs.valid, inputs.positions, cache_length)
