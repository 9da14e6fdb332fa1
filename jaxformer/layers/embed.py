"""Token embedding with an `attend` method for tied output projections.

Legend: B batch, T length, D model width, V vocabulary, M tokens (B * T flattened).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.errors import InputError
from jaxformer.layers.axes import constrain, param


def check_ids_in_range(name: str, ids: jax.Array, size: int) -> None:
    """Raise InputError if concrete ids [B, T] fall outside [0, size); a no-op under tracing (jit/vmap).

    A gather would silently clamp them to the last row, so eager calls are checked here.
    """
    if isinstance(ids, jax.core.Tracer) or ids.size == 0:
        return
    if isinstance(ids, jax.Array) and not ids.is_fully_addressable:
        return  # spread over several hosts: not readable here
    values = np.asarray(ids)  # concrete: read on the host (jnp ops here would be traced inside eval_shape/jit)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= size:
        bad = high if high >= size else low
        raise InputError(f"{name} contain {bad}, outside [0, {size}); ids must be smaller than the table size {size}.")


def lookup_rows(table: jax.Array, ids: jax.Array, row_axis: str | None, *, nan_outside: bool = False) -> jax.Array:
    """table [N, D] (rows on logical axis `row_axis`), ids [B, T] -> table[ids] [B, T, D].

    Ids outside [0, N) are rejected eagerly by `check_ids_in_range`; under jit they cannot be. With
    `nan_outside` (token embeddings) such a row is NaN, negative ids included (never wrapped to
    row N - 1, as plain indexing would), so a bad id shows up as non-finite logits and a training
    step's finite flag, never as a silently different token. Without it (position tables, whose
    padded slots may carry -1) the gather clamps, and the masked slot's value is never used.

    Under a mesh, D is gathered whole first (fsdp splits it), the rows keep their split (tensor
    parallelism may split a vocabulary): XLA then looks rows up in each device's part and sums
    the parts, giving rows that can be split by batch like the ids. A lookup in a D-split table
    left the rows split along D, which XLA could only turn into batch-split activations by
    replicating them ("involuntary full rematerialization"), in the forward and the backward
    pass. Outside a mesh the constraint is a no-op.
    """
    table = constrain(table, (row_axis, None))
    if nan_outside:
        ids = jnp.where(ids < 0, table.shape[0], ids)  # negative ids become "past the end": NaN, not a wrap
        return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)
    return jnp.take(table, ids, axis=0)


RANGE_NAMES = {"vocab": "token ids (vocab_size)", "token_types": "token_type_ids (num_token_types)"}


class Embed(nn.Module):
    """tokens [B, T] int -> [B, T, D]; `attend(x [B, T, D]) -> [B, T, V]` = x E^T."""

    vocab_size: int
    d_model: int
    init_stddev: float = 0.02
    table_axes: tuple[str, str] = ("vocab", "embed")
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = param(
            self,
            "embedding",
            nn.initializers.normal(self.init_stddev),
            (self.vocab_size, self.d_model),
            self.table_axes,
            self.param_dtype,
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise InputError(f"token ids must be integers, got dtype {tokens.dtype}")
        check_ids_in_range(RANGE_NAMES.get(self.table_axes[0], "ids"), tokens, self.vocab_size)
        return lookup_rows(self.embedding, tokens, self.table_axes[0], nan_outside=True).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """x [..., D] -> logits [..., V] = x E^T (the tied output projection)."""
        table = self.embedding.astype(self.dtype)
        flat = x.astype(self.dtype).reshape(-1, x.shape[-1])  # [M, D]
        return tied_logits(flat, table).reshape(*x.shape[:-1], self.vocab_size)


@jax.custom_vjp
def tied_logits(x: jax.Array, table: jax.Array) -> jax.Array:
    """x [M, D], table [V, D] -> x table^T [M, V]: the same product as `einsum("md,vd->mv")`.

    Only the backward pass differs from autodiff's: the table gradient is written as
    (x^T g)^T, which XLA:CPU computes straight from g [M, V]. Autodiff's form made it
    materialise g transposed [V, M] first, the largest copy of a language-model
    train step (M tokens x V vocabulary; see benchmarks/results/PERFORMANCE.md).
    """
    return _logits(x, table)


def _logits(x: jax.Array, table: jax.Array) -> jax.Array:
    """x [M, D] @ table^T. One row (greedy decoding, batch 1) as a matrix-vector product table [V, D] @ x[0]:
    written as x @ table^T, XLA:CPU fused the transposed table and the final LayerNorm into a scalar
    loop that ran 3x slower than this (the whole decode step's largest op)."""
    if x.shape[0] == 1:
        return (table @ x[0])[None, :]  # [1, V]
    return x @ table.T


def _tied_logits_fwd(x: jax.Array, table: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _logits(x, table), (x, table)


def _tied_logits_bwd(saved: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, table = saved
    return g @ table, (x.T @ g).T  # [M, V] @ [V, D] -> [M, D]; ([D, M] @ [M, V])^T -> [V, D]


tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)
