"""Position-wise feed-forward layer: plain (ReLU, GELU) or gated (SwiGLU, GeGLU, ReGLU).

Legend: B batch, T length, D model width, F hidden width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.errors import ConfigError
from jaxformer.layers.axes import constrain, param
from jaxformer.layers.linear import project

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    # gated variants (Shazeer 2020): act(x W_gate) * (x W_up)
    "swiglu": jax.nn.silu,
    "geglu": lambda x: jax.nn.gelu(x, approximate=False),
    "geglu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # T5 v1.1 "gated-gelu" (HF gelu_new)
    "reglu": jax.nn.relu,
}
GATED = ("swiglu", "geglu", "geglu_tanh", "reglu")


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation={name!r} is not allowed; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """x [B, T, D] -> [B, T, D]: down(dropout(act(up(x)))) or, gated, down(act(gate(x)) * up(x))."""

    d_model: int
    d_ff: int
    activation: str = "gelu"
    use_bias: bool = True
    dropout_rate: float = 0.0
    init_stddev: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        act = activation_fn(self.activation)
        init = nn.initializers.normal(self.init_stddev)
        x = x.astype(self.dtype)

        def dense_in(name: str) -> jax.Array:
            kernel = param(self, f"{name}_kernel", init, (self.d_model, self.d_ff), ("embed", "mlp"), self.param_dtype)
            y = project(x, kernel.astype(self.dtype))  # [B, T, F]
            if self.use_bias:
                y = y + param(
                    self, f"{name}_bias", nn.initializers.zeros, (self.d_ff,), ("mlp",), self.param_dtype
                ).astype(self.dtype)
            return y

        if self.activation in GATED:
            hidden = act(dense_in("gate")) * dense_in("up")
        else:
            hidden = act(dense_in("up"))
        hidden = constrain(hidden, ("activation_batch", "activation_length", "activation_mlp"))
        hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
        kernel_out = param(self, "down_kernel", init, (self.d_ff, self.d_model), ("mlp", "embed"), self.param_dtype)
        out = project(hidden, kernel_out.astype(self.dtype))  # [B, T, D]
        if self.use_bias:
            out = out + param(
                self, "down_bias", nn.initializers.zeros, (self.d_model,), ("embed",), self.param_dtype
            ).astype(self.dtype)
        return out
