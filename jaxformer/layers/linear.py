"""The one way a layer multiplies activations by a weight: as a single 2-D matrix product.

Legend: M tokens (the product of the activation's leading axes, e.g. B T), I input features,
O output features (possibly several kernel axes, e.g. N H).
"""

from __future__ import annotations

import math

import jax


def project(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [..., I] times kernel [I, *O] -> [..., *O], computed as [M, I] @ [I, prod(O)].

    The same numbers as `einsum("...i,io->...o")`, written so that every dot of the step,
    backward included, is a plain matrix product. Why: for the weight gradient autodiff
    contracts the activations over all their leading axes; with [B, T] as two contracting
    axes XLA:CPU re-laid out both operands (a transpose copy of each [B, T, F] activation)
    before its GEMM, which cost as much time as the matmuls in a small model's train step
    (benchmarks/results/PERFORMANCE.md, "baby GPT"). Flattened, the contraction is over one
    axis M in the layout the forward pass wrote, and XLA folds the transpose into the GEMM.

    Merging contiguous leading axes and splitting the trailing ones are bitcasts (no data
    movement) on every backend; GPU and TPU compilers canonicalise the einsum to this same
    product themselves. The token axis M keeps the batch axis's sharding because the length
    axis is never sharded (`activation_length` maps to no mesh axis).
    """
    width = x.shape[-1]
    if kernel.shape[0] != width:
        raise ValueError(f"project: x has {width} features but the kernel expects {kernel.shape[0]}")
    out_axes = kernel.shape[1:]
    y = x.reshape(-1, width) @ kernel.reshape(width, math.prod(out_axes))
    return y.reshape(*x.shape[:-1], *out_axes)
