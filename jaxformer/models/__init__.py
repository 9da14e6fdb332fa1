"""Model families and the public builders `build(config)` and `param_count(config)`."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.config.backend import check_backend
from jaxformer.errors import InputError
from jaxformer.models.decoder import DecoderOnly
from jaxformer.models.encoder import EncoderOnly
from jaxformer.models.encoder_decoder import EncoderDecoder
from jaxformer.models.stack import stack_layer_params, unstack_layer_params

FAMILIES: dict[str, type[nn.Module]] = {
    "encoder_only": EncoderOnly,
    "decoder_only": DecoderOnly,
    "encoder_decoder": EncoderDecoder,
}


def build(config: ModelConfig, deterministic: bool = True, decode: bool = False) -> nn.Module:
    """The Flax module for `config`: EncoderOnly (tokens [B, T] -> {"hidden": [B, T, D], ...}), DecoderOnly
    (tokens [B, T] -> logits [B, T, V]) or EncoderDecoder (source [B, S], target [B, T] -> logits [B, T, V]).

    `deterministic=False` enables dropout (pass rngs={"dropout": key} to apply);
    `decode=True` builds the KV-cache decoding variant (decoder families only).
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build() expects a ModelConfig, got {type(config).__name__}")
    check_backend(config)  # a kernel this backend lacks fails here, not inside jit
    cls = FAMILIES[config.family]
    if decode:
        if config.family == "encoder_only":
            raise InputError("decode=True needs a decoder: family='encoder_only' has none.")
        return cls(config, deterministic=deterministic, decode=True)  # type: ignore[call-arg]
    return cls(config, deterministic=deterministic)  # type: ignore[call-arg]


def dummy_inputs(config: ModelConfig, batch: int = 1, length: int | None = None) -> dict[str, Any]:
    """Keyword arguments to initialise a model of `config`: tokens (or source and target) of ones [batch, length]."""
    length = min(config.max_len, 8) if length is None else length
    tokens = jnp.ones((batch, length), jnp.int32)
    if config.family == "encoder_decoder":
        return {"source": tokens, "target": tokens}
    return {"tokens": tokens}


def init_params(config: ModelConfig, rng: jax.Array, batch: int = 1, length: int | None = None) -> Any:
    """Initialise parameters (plain arrays, logical-axis boxes removed) by tracing dummy tokens [batch, length]."""
    model = build(config)
    inputs = dummy_inputs(config, batch, length)
    variables = jax.jit(model.init)(rng, **inputs)  # compiled: much faster than tracing op by op
    return nn.meta.unbox(variables["params"])


def abstract_params(config: ModelConfig) -> Any:
    """Parameter shapes/dtypes as `jax.ShapeDtypeStruct`s, boxed with their logical axes. No allocation.

    E.g. a query kernel [D, N, H] is `ShapeDtypeStruct((D, N, H))` with names ("embed", "heads", "kv").
    """
    model = build(config)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **dummy_inputs(config))["params"])


def logical_axes(config: ModelConfig) -> Any:
    """Tree of `PartitionSpec`s of logical axis names, one per parameter (a kernel [D, F] -> ("embed", "mlp"))."""
    return nn.get_partition_spec(abstract_params(config))


def param_count(config: ModelConfig) -> int:
    """Number of parameters of the model described by `config`: the sum over tensors of their sizes (a table
    [V, D] counts V * D). Abstract: nothing is allocated."""
    leaves = jax.tree.leaves(nn.meta.unbox(abstract_params(config)))
    return int(sum(math.prod(leaf.shape) for leaf in leaves))


__all__ = [
    "FAMILIES",
    "DecoderOnly",
    "EncoderDecoder",
    "EncoderOnly",
    "abstract_params",
    "build",
    "dummy_inputs",
    "init_params",
    "logical_axes",
    "param_count",
    "stack_layer_params",
    "unstack_layer_params",
]
