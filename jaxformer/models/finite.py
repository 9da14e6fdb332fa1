"""Are a model's weights finite? Checked wherever weights enter from outside (`hf.load`, checkpoint restore).

A NaN or inf weight never comes from a healthy run or an intact file: the model diverged before
it was saved, or the bytes are damaged (safetensors files carry no checksum). Such weights give
NaN logits with exit status 0, so they are reported by tensor name when they are read, and
refused unless the caller passes `allow_nonfinite=True`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.errors import CheckpointError


class NonFiniteWeightsError(CheckpointError):
    """Weights read from a file or checkpoint hold NaN or inf values."""


def _bad_count(value: Any) -> int:
    if isinstance(value, jax.Array):
        if not jnp.issubdtype(value.dtype, jnp.inexact):
            return 0
        return int(jax.device_get(jnp.sum(~jnp.isfinite(value))))  # reduced on device: one scalar comes back
    array = np.asarray(value)
    if array.dtype.kind in "biuSUO":  # integer, bool, text: nothing to check
        return 0
    if array.dtype.kind not in "fc":  # ml_dtypes (bfloat16, float8) report kind "V": widen to float32
        array = array.astype(np.float32)
    return int(np.count_nonzero(~np.isfinite(array)))


def nonfinite_tensors(named: Iterable[tuple[str, Any]]) -> list[tuple[str, int, int]]:
    """[(name, values that are NaN or inf, size)] for each tensor with at least one such value."""
    found = []
    for name, value in named:
        bad = _bad_count(value)
        if bad:
            found.append((name, bad, int(np.prod(np.shape(value)))))
    return found


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(slash-joined key path, leaf) for every leaf of a parameter pytree."""
    return [
        ("/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def check_finite(named: Mapping[str, Any] | Any, where: str, allow_nonfinite: bool = False) -> None:
    """Raise NonFiniteWeightsError naming the tensors of `named` (a {name: array} dict or a pytree) that hold
    NaN/inf; with `allow_nonfinite` print the same report as a warning instead."""
    flat = isinstance(named, Mapping) and all(not isinstance(v, Mapping) for v in named.values())
    report(nonfinite_tensors(named.items() if flat else named_leaves(named)), where, allow_nonfinite)


def report(found: list[tuple[str, int, int]], where: str, allow_nonfinite: bool = False) -> None:
    """Raise (or with `allow_nonfinite` warn) about `found` = nonfinite_tensors(...) of the weights of `where`."""
    if not found:
        return
    shown = ", ".join(f"{name} ({bad} of {size})" for name, bad, size in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    report = f"{where} has NaN/inf weights in {len(found)} tensor(s): {shown}{more}"
    if allow_nonfinite:
        print(f"WARNING: {report}; loading them anyway (allow_nonfinite=True).", file=sys.stderr, flush=True)
        return
    raise NonFiniteWeightsError(
        f"{report}. The file is damaged or the model diverged before it was saved: re-download or re-export "
        "it, or pass allow_nonfinite=True to load it anyway."
    )
