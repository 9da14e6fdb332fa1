"""int8 weight-only quantization of a model's dense kernels for decoding (per-output-channel, symmetric).

For a kernel W with contracted (input) axes I and output axes O:

    s[o] = max_i |W[i, o]| / 127        (1 where a whole channel is zero)
    q[i, o] = clip(round(W[i, o] / s[o]), -127, 127)   int8
    W ~ q * s                            |W - q * s| <= s / 2

`quantize_params` replaces every attention projection (query/key/value [D, n, H], output
[N, H, D]), MLP kernel (gate/up [D, F], down [F, D]) and, with `head=True`, the untied LM head
[D, V] by an `Int8Kernel(values, scale)`; embeddings, norms and biases stay float32. `scale` keeps
the kernel's rank (size 1 on the contracted axes), so a scanned stack's leading layers axis L is
sliced by `nn.scan` like any parameter and the scale broadcasts without reshapes.

The layers are unchanged: they read every kernel as `param(...).astype(dtype)`, and
`Int8Kernel.astype` dequantizes there, inside the compiled decoding step, so the parameters stay
int8 in memory (1 byte + a scale per output channel instead of 4 bytes per weight) and the search
functions (`decoding.generate`, beam, speculative) run on them as on float32 params. Flax checks
an existing parameter's shape against its initializer: `values` has the kernel's shape.

Why not `qwix` (0.1.8): its PTQ provider intercepts `dot_general`/`einsum` whose right operand is a
module parameter; jaxformer's self-attention multiplies by the concatenation of the q/k/v kernels,
which it does not recognise (the LoRA evaluation in `models/lora.py` found the same).

Legend: L layers, D model width, N query heads, H head size, F FFN width, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.config import ModelConfig
from jaxformer.errors import InputError

QUANTIZE_CHOICES = ("none", "int8")
INT8_MAX = 127

# Kernel name -> (rank of the kernel without a layers axis, how many leading axes are contracted).
KERNELS = {
    "query_kernel": (3, 1),  # [D, N, H]
    "key_kernel": (3, 1),  # [D, K, H]
    "value_kernel": (3, 1),  # [D, K, H]
    "out_kernel": (3, 2),  # [N, H, D]
    "gate_kernel": (2, 1),  # [D, F]
    "up_kernel": (2, 1),  # [D, F]
    "down_kernel": (2, 1),  # [F, D]
}
HEAD_KERNEL = ("lm_head", "kernel")  # [D, V] (absent when the head is tied to the embedding)


@flax.struct.dataclass
class Int8Kernel:
    """values int8 [*shape] and scale float32 (shape with 1 on the contracted axes): W ~ values * scale."""

    values: jax.Array
    scale: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes) + int(self.scale.nbytes)

    def astype(self, dtype: Any) -> jax.Array:
        """The dequantized kernel in `dtype` (what the layer multiplies by)."""
        return (self.values.astype(jnp.float32) * self.scale).astype(dtype)


def quantize_int8(w: jax.Array | np.ndarray, contracted: tuple[int, ...]) -> Int8Kernel:
    """Symmetric per-output-channel int8 of w: the absmax over the `contracted` axes sets each scale."""
    w = jnp.asarray(w, jnp.float32)
    absmax = jnp.max(jnp.abs(w), axis=contracted, keepdims=True)
    scale = jnp.where(absmax > 0, absmax / INT8_MAX, 1.0).astype(jnp.float32)
    values = jnp.clip(jnp.round(w / scale), -INT8_MAX, INT8_MAX).astype(jnp.int8)
    return Int8Kernel(values, scale)


def _contracted_axes(name: str, ndim: int) -> tuple[int, ...] | None:
    """The contracted axes of kernel `name` with `ndim` dims (a leading layers axis allowed), or None."""
    if name not in KERNELS:
        return None
    rank, inputs = KERNELS[name]
    first = ndim - rank  # 1 with a scanned layers axis, else 0
    if first not in (0, 1):
        raise ValueError(f"kernel {name!r} has {ndim} dims; expected {rank} (+1 layers axis)")
    return tuple(range(first, first + inputs))


def _key(entry: Any) -> str:
    return str(getattr(entry, "key", entry))


def quantize_params(config: ModelConfig, params: Any, head: bool = True) -> Any:
    """params with the attention/MLP kernels (and the untied LM head when `head`) as `Int8Kernel`s."""
    if config.family != "decoder_only":
        raise InputError(
            f"int8 quantization supports decoder-only models; this one is {config.family} (drop --quantize)."
        )

    def convert(path: tuple, leaf: Any) -> Any:
        names = tuple(_key(p) for p in path)
        axes = _contracted_axes(names[-1], np.ndim(leaf))
        if axes is None and head and names[-2:] == HEAD_KERNEL:
            axes = (np.ndim(leaf) - 2,)
        return leaf if axes is None else quantize_int8(leaf, axes)

    return jax.tree_util.tree_map_with_path(convert, params)


def quantize(config: ModelConfig, params: Any, method: str | None) -> Any:
    """params for `method` ("int8", or "none"/None: unchanged); an unknown method is a one-line error."""
    if method in (None, "none"):
        return params
    if method != "int8":
        raise InputError(f"unknown quantization {method!r}; choose one of {', '.join(QUANTIZE_CHOICES)}.")
    return quantize_params(config, params)


def kernel_bytes(params: Any) -> tuple[int, int]:
    """(bytes of the quantized kernels as stored, bytes the same kernels take in float32)."""
    kernels = [k for k in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, Int8Kernel))]
    kernels = [k for k in kernels if isinstance(k, Int8Kernel)]
    return sum(k.nbytes for k in kernels), sum(4 * int(np.prod(k.shape)) for k in kernels)
