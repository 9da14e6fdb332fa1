"""Flax NNX access to every jaxformer layer and model, through `flax.nnx.bridge.ToNNX`.

jaxformer modules are Linen (`init` / `apply` on explicit parameter pytrees). `to_nnx` wraps one as
a stateful NNX module, initialised from sample inputs or holding given Linen parameters; calling it
runs the Linen `apply`, so outputs are the Linen module's. `linen_params` / `load_linen_params`
convert parameters both ways, values unchanged (bit for bit):

    Linen params {"decoder": {"layers_0": {"mlp": {"up_kernel": [D, F], ...}}}}
      <-> NNX `nnx.Param` variables at the same paths (model.decoder["layers_0"]["mlp"]["up_kernel"])

Each `nnx.Param` keeps its logical axis names as `out_sharding` metadata (e.g. ("embed", "mlp")).
Variables are created with NNX eager sharding off, so no mesh is needed; map the names to a mesh with
`jaxformer.sharding`'s logical-axis rules when you shard. Dropout: build the Linen module with
`deterministic=False` and give `rngs=nnx.Rngs(params=0, dropout=1)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, traverse_util
from flax.nnx.bridge import variables as bridge_variables

from jaxformer.errors import InputError

Params = Mapping[str, Any]


def to_nnx(
    module: nn.Module,
    *sample_inputs: Any,
    rngs: nnx.Rngs | int = 0,
    params: Params | None = None,
    **sample_kwargs: Any,
) -> nnx.bridge.ToNNX:
    """An initialised NNX module running `module` (a Linen layer or model) on inputs like `sample_inputs`.

    With `params` (a Linen params pytree, boxed or plain, as `module.init(...)["params"]` gives) the NNX
    module holds exactly those values and no initialiser runs (shapes come from `jax.eval_shape`);
    otherwise it is initialised from `rngs` like `module.init`. `sample_inputs` / `sample_kwargs` are
    those of the Linen `__call__`, e.g. tokens [B, T] for a decoder, (source [B, S], target [B, T])
    for an encoder-decoder, x [B, T, D] and mask= for a block.
    """
    rngs = nnx.Rngs(rngs) if isinstance(rngs, int) else rngs
    wrapped = nnx.bridge.ToNNX(module, rngs=rngs)
    with nnx.use_eager_sharding(False):
        if params is None:
            return nnx.bridge.lazy_init(wrapped, *sample_inputs, **sample_kwargs)
        keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}  # shapes only: nothing runs
        abstract = jax.eval_shape(lambda: module.init(keys, *sample_inputs, **sample_kwargs))
        boxed = rebox(abstract["params"], params)
        for name, value in bridge_variables.linen_vars_to_nnx_attrs({"params": boxed}).items():
            setattr(wrapped, name, nnx.data(value))
    return wrapped


def rebox(abstract: Params, params: Params) -> Params:
    """`params` (plain arrays or boxes) put into the metadata boxes (logical axes) of `abstract`."""
    check_same_paths(flat_paths(abstract), flat_paths(params))
    values = traverse_util.flatten_dict(nn.meta.unbox(params))
    boxes = traverse_util.flatten_dict(abstract, is_leaf=lambda _, x: isinstance(x, nn.meta.AxisMetadata))
    out = {}
    for path, box in boxes.items():
        value = jnp.asarray(values[path])
        shape = box.unbox().shape if isinstance(box, nn.meta.AxisMetadata) else box.shape
        if value.shape != shape:
            raise InputError(f"parameter {'/'.join(path)} has shape {value.shape}; the module needs {shape}.")
        out[path] = box.replace_boxed(value) if isinstance(box, nn.meta.AxisMetadata) else value
    return traverse_util.unflatten_dict(out)


def linen_params(model: nnx.Module) -> dict[str, Any]:
    """The Linen params pytree (plain arrays, as `nn.meta.unbox(module.init(...)["params"])`) of an NNX module
    made by `to_nnx`: `module.apply({"params": linen_params(model)}, ...)` computes what `model(...)` does."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return traverse_util.unflatten_dict({tuple(str(k) for k in path): var.get_value() for path, var in flat})


def load_linen_params(model: nnx.Module, params: Params) -> nnx.Module:
    """Set the `nnx.Param` values of `model` (made by `to_nnx`) from a Linen params pytree; returns `model`.

    Paths and shapes must match those of the module exactly; the error names the ones that differ."""
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    current = {tuple(str(k) for k in path): var for path, var in flat}
    values = traverse_util.flatten_dict(nn.meta.unbox(params))
    check_same_paths(set(current), set(values))
    for path, var in current.items():
        value = jnp.asarray(values[path])
        if value.shape != var.get_value().shape:
            raise InputError(
                f"parameter {'/'.join(path)} has shape {value.shape}; the module needs {var.get_value().shape}."
            )
        var.set_value(value)
    nnx.update(model, state)
    return model


def flat_paths(tree: Params) -> set[tuple[str, ...]]:
    return set(traverse_util.flatten_dict(tree, is_leaf=lambda _, x: isinstance(x, nn.meta.AxisMetadata)))


def check_same_paths(wanted: set[tuple[str, ...]], given: set[tuple[str, ...]]) -> None:
    """Raise (one line) naming the parameter paths that are missing from or unexpected in `given`."""
    missing, unexpected = sorted(wanted - given), sorted(given - wanted)
    if missing or unexpected:
        raise InputError(
            f"params do not match the module: missing {_names(missing)}, unexpected {_names(unexpected)}; "
            "pass the params of the same module and config."
        )


def _names(paths: list[tuple[str, ...]], most: int = 5) -> list[str]:
    return ["/".join(p) for p in paths[:most]] + (["..."] if len(paths) > most else [])
