"""Input embeddings: tokens (+ absolute positions) (+ token types), scaled, normalised, dropped out.

Legend: B batch, T length, D model width.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig, padding_position
from jaxformer.errors import InputError
from jaxformer.layers.axes import BTD, constrain
from jaxformer.layers.embed import Embed
from jaxformer.layers.norms import make_norm
from jaxformer.layers.positions import LearnedPositions, SinusoidalPositions


def token_embed(cfg: ModelConfig, name: str | None = None) -> Embed:
    """The [V, D] token table of `cfg` (also the tied output projection), one definition for every family."""
    return Embed(
        cfg.vocab_size,
        cfg.d_model,
        cfg.initializer_range,
        dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype,
        name=name,
    )


def max_tokens(config: ModelConfig) -> int:
    """The longest input: max_len, less the positions RoBERTa's padding offset reserves (pad id and below)."""
    if config.position_rule == "padding_offset":
        return config.max_len - padding_position(config) - 1
    return config.max_len


def check_length(config: ModelConfig, length: int, what: str = "input") -> None:
    limit = max_tokens(config)
    if length > limit:
        raise InputError(
            f"{what} length {length} exceeds the model's maximum positions max_len={config.max_len}"
            f"{f' less the padding offset: {limit}' if limit != config.max_len else ''}; "
            "truncate the input or use a config with a larger max_len."
        )


def default_positions(tokens: jax.Array) -> jax.Array:
    """[B, T] positions 0..T-1 for every row."""
    return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def padding_offset_positions(tokens: jax.Array, pad_id: int, offset: int | None = None) -> jax.Array:
    """RoBERTa's rule: [B, T] positions offset+1, offset+2, ... over non-pad tokens; pad tokens get offset
    (offset None: pad_id, as in RoBERTa's checkpoints)."""
    real = (tokens != pad_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + (pad_id if offset is None else offset)


def encoder_positions(config: ModelConfig, tokens: jax.Array) -> jax.Array:
    """The default positions [B, T] of an encoder_only model, by `config.position_rule`."""
    if config.position_rule == "padding_offset":
        return padding_offset_positions(tokens, config.pad_token_id, padding_position(config))
    return default_positions(tokens)


class DecodePositions(nn.Module):
    """Default positions [B, T] of the new tokens while decoding with a KV cache.

    They continue from the number of tokens already appended (0..T-1 on the first call), so
    step-by-step decoding without explicit positions matches the full forward pass. Explicit
    `positions` are returned unchanged but still counted. The count lives in the "cache"
    variable `position_index`; the shape-only pass that creates the cache counts nothing.
    """

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        initialised = self.has_variable("cache", "position_index")
        index = self.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
        if not initialised:
            return default_positions(tokens) if positions is None else positions
        if positions is None:
            positions = default_positions(tokens) + index.value
        index.value = index.value + tokens.shape[1]
        return positions


class InputEmbedding(nn.Module):
    """tokens [B, T] -> [B, T, D]. `embed` is the (possibly shared) token table."""

    config: ModelConfig
    embed: Embed
    deterministic: bool = True

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, token_type_ids: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        dtype, param_dtype = cfg.jnp_dtype, cfg.jnp_param_dtype
        x = self.embed(tokens)
        if cfg.embed_scale:  # sqrt(D) rounded to the embedding dtype first, as transformers (Gemma) does
            x = x * jnp.asarray(math.sqrt(cfg.d_model), x.dtype)
        if cfg.position == "learned":
            x = x + LearnedPositions(
                cfg.max_len,
                cfg.d_model,
                cfg.initializer_range,
                dtype,
                param_dtype,
                cfg.position_offset,
                name="positions",
            )(positions)
        elif cfg.position == "sinusoidal":
            x = x + SinusoidalPositions(cfg.max_len, cfg.d_model, cfg.sinusoidal_layout, dtype, name="positions")(
                positions
            )
        if cfg.num_token_types:
            types = Embed(
                cfg.num_token_types,
                cfg.d_model,
                cfg.initializer_range,
                ("token_types", "embed"),
                dtype,
                param_dtype,
                name="token_types",
            )
            x = x + types(jnp.zeros_like(tokens) if token_type_ids is None else token_type_ids)
        if cfg.embedding_norm:
            x = make_norm(cfg.norm, cfg.norm_eps, cfg.use_bias, dtype, param_dtype, name="norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)
        return constrain(x, BTD)
