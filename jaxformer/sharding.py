"""Device mesh, logical-axis rules and the shardings of state and batches.

The mesh has three named axes:

    data    pure data parallelism: batch rows split, parameters replicated
    fsdp    fully-sharded data parallelism: batch rows split *and* parameters / optimizer
            state split along their "embed" axis (gathered on use by XLA)
    tensor  tensor parallelism: attention heads, MLP units and the vocabulary split

Parameters carry logical axis names (jaxformer/layers/axes.py); the experiment's
`logical_axis_rules` map each name to a mesh axis, a tuple of mesh axes or None
(replicated). Batches are split on axis 0 over ("data", "fsdp"). Activation
constraints written in the model (`nn.with_logical_constraint`) take effect while
`mesh_context(mesh, rules)` is active, so the steps are traced inside it.

Every check raises `ConfigError` with one line naming the setting, its value and the fix.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, Self, TypeVar

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.config import ConfigError, MeshConfig, ModelConfig
from jaxformer.layers import axes

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # batch rows are split over both

Rules = tuple[tuple[str, Any], ...]


class ShardableState(Protocol):
    """Any pytree state with parameters and optimizer state (e.g. `train.state.TrainState`)."""

    params: Any
    opt_state: Any

    def replace(self, **changes: Any) -> Self: ...


State = TypeVar("State", bound=ShardableState)


# Validation --------------------------------------------------------------


def mesh_shape(mesh: MeshConfig, device_count: int) -> dict[str, int]:
    """Axis sizes {data, fsdp, tensor} with -1 resolved; their product must equal `device_count`."""
    sizes = {name: getattr(mesh, name) for name in MESH_AXES}
    fixed = math.prod(v for v in sizes.values() if v != -1)
    free = [name for name, v in sizes.items() if v == -1]
    if free:
        if device_count % fixed:
            named = " x ".join(f"mesh.{n}={v}" for n, v in sizes.items() if v != -1)
            raise ConfigError(
                f"mesh: {named} = {fixed} does not divide the {device_count} devices, so mesh.{free[0]}=-1 "
                f"cannot take the rest; choose sizes whose product divides {device_count}."
            )
        sizes[free[0]] = device_count // fixed
    total = math.prod(sizes.values())
    if total != device_count:
        product = " x ".join(f"{n}={v}" for n, v in sizes.items())
        raise ConfigError(
            f"mesh: {product} = {total} devices, but {device_count} are available; make the product of "
            f"mesh.data, mesh.fsdp and mesh.tensor equal {device_count} (or set one of them to -1)."
        )
    return sizes


def check_rules(rules: Rules) -> None:
    """Every rule maps a known logical axis to None, a mesh axis or a tuple of mesh axes."""
    for rule in rules:
        if len(rule) != 2:
            raise ConfigError(f"logical_axis_rules: each rule is [logical_axis, mesh_axis], got {list(rule)!r}.")
        name, target = rule
        if name not in axes.ALL_AXES:
            raise ConfigError(
                f"logical_axis_rules: unknown logical axis {name!r}; known names: {', '.join(axes.ALL_AXES)}."
            )
        targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        for mesh_axis in targets:
            if mesh_axis not in MESH_AXES:
                raise ConfigError(
                    f"logical_axis_rules: logical axis {name!r} maps to unknown mesh axis {mesh_axis!r}; "
                    f"mesh axes are {', '.join(MESH_AXES)} (or null for replicated)."
                )


def _mesh_axes_of(logical: str, rules: Rules) -> tuple[str, ...]:
    """Mesh axes the first rule for `logical` names (() when replicated or absent)."""
    for name, target in rules:
        if name == logical:
            return () if target is None else (target,) if isinstance(target, str) else tuple(target)
    return ()


def check_model(model: ModelConfig, sizes: dict[str, int], rules: Rules) -> None:
    """The head counts must split evenly over the mesh axes their rules name (tensor parallelism)."""
    counts = {"heads": ("model.num_heads", model.num_heads)}
    counts["kv_heads"] = ("model.num_kv_heads", model.kv_heads)
    for logical, (field, count) in counts.items():
        mesh_axes = _mesh_axes_of(logical, rules)
        split = math.prod(sizes[a] for a in mesh_axes)
        if count % split:
            named = " x ".join(f"mesh.{a}={sizes[a]}" for a in mesh_axes)
            raise ConfigError(
                f"{named} does not divide {field}={count}: the {logical!r} axis is split over it; "
                f"choose a size of {' x '.join(f'mesh.{a}' for a in mesh_axes)} that divides {count}."
            )


def check_batch(batch_size: int, grad_accum_steps: int, parallel: int, described: str, per_device: bool) -> None:
    """The global batch must split evenly over the `parallel` data-parallel shards.

    `per_device` (pmap): each device's rows are also split into `grad_accum_steps` micro-batches.
    """
    if batch_size % parallel:
        raise ConfigError(
            f"train.batch_size={batch_size} is not divisible by the data-parallel size {parallel} ({described}); "
            f"use a multiple of {parallel}."
        )
    if per_device and (batch_size // parallel) % grad_accum_steps:
        raise ConfigError(
            f"train.batch_size={batch_size} gives {batch_size // parallel} rows per device, not divisible by "
            f"train.grad_accum_steps={grad_accum_steps}; use a batch size that is a multiple of "
            f"{parallel * grad_accum_steps}."
        )


# Mesh and shardings -------------------------------------------------------


def make_mesh(sizes: dict[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh; `jax.make_mesh` puts the last axes on the closest devices."""
    shape = tuple(sizes[name] for name in MESH_AXES)
    auto = (AxisType.Auto,) * len(MESH_AXES)
    if devices is None:
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Mesh + logical rules active: `nn.with_logical_constraint` in the model becomes a real constraint."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split over ("data", "fsdp"); every other axis whole."""
    return NamedSharding(mesh, P(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def logical_sharding(
    logical: Sequence[str | None], shape: Sequence[int], mesh: Any, rules: Rules, unsplit: list[str] | None = None
) -> NamedSharding:
    """NamedSharding of an array with logical axis names. A dimension whose size the mesh axes
    do not divide stays whole (e.g. a vocabulary of 99 with tensor=2): correct, only less split;
    such dimensions are described in `unsplit` when a list is given."""
    spec = nn.logical_to_mesh_axes(tuple(logical), rules) or P()
    dims = []
    for name, size, target in zip(logical, shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        names = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        split = math.prod(mesh.shape[a] for a in names)
        if names and size % split:
            if unsplit is not None:
                unsplit.append(f"{name}={size} (not divisible by {' x '.join(names)}={split})")
            target = None
        dims.append(target if names else None)
    return NamedSharding(mesh, P(*dims))


def param_shardings(boxed_params: Any, mesh: Any, rules: Rules, unsplit: list[str] | None = None) -> Any:
    """Tree of NamedShardings from params boxed with their logical axes (`abstract_state(...).params`)."""
    specs = nn.get_partition_spec(boxed_params)
    shapes = nn.meta.unbox(boxed_params)
    return jax.tree.map(
        lambda spec, leaf: logical_sharding(tuple(spec), leaf.shape, mesh, rules, unsplit),
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, P),
    )


def opt_state_shardings(opt_state: Any, params: Any, shardings: Any, mesh: Mesh) -> Any:
    """Optimizer-state leaves that mirror a parameter (same path suffix and shape: Adam's mu, nu, ...)
    take that parameter's sharding; the rest (counts, factored statistics) are replicated."""
    by_path = {
        tuple(path): (leaf.shape, sharding)
        for (path, leaf), sharding in zip(
            jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(shardings), strict=True
        )
    }

    def pick(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        for start in range(len(path)):
            match = by_path.get(tuple(path[start:]))
            if match is not None and tuple(match[0]) == tuple(leaf.shape):
                return match[1]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, opt_state)


def state_shardings(abstract: State, mesh: Mesh, rules: Rules, unsplit: list[str] | None = None) -> State:
    """Shardings of a whole state from its abstract value with params still boxed (e.g.
    `train.state.abstract_state(...)`): the same structure with NamedShardings as leaves. Params
    follow their logical axes, optimizer state mirrors them, every other leaf is replicated."""
    params = param_shardings(abstract.params, mesh, rules, unsplit)
    plain_params = nn.meta.unbox(abstract.params)
    everything_replicated = jax.tree.map(lambda _: replicated(mesh), abstract)
    return everything_replicated.replace(
        params=params, opt_state=opt_state_shardings(abstract.opt_state, plain_params, params, mesh)
    )


def per_device_bytes(tree: Any, device: Any | None = None) -> int:
    """Bytes of `tree`'s arrays held by `device` (default: the first local device)."""
    device = jax.local_devices()[0] if device is None else device
    return sum(
        shard.data.nbytes
        for leaf in jax.tree.leaves(tree)
        for shard in leaf.addressable_shards
        if shard.device == device
    )


def pad_rows(batch: dict[str, Any], multiple: int) -> dict[str, Any]:
    """Pad every array's rows up to a multiple of `multiple` by repeating the last row with weight 0,
    so sums over the batch are unchanged (for a short final evaluation batch)."""
    rows = int(np.shape(batch["weights"])[0])
    missing = -rows % multiple
    if not missing:
        return batch
    padded = {}
    for key, value in batch.items():
        value = np.asarray(value)
        filler = np.repeat(value[-1:], missing, axis=0)
        if key == "weights":
            filler = np.zeros_like(filler)
        padded[key] = np.concatenate([value, filler], axis=0)
    return padded
