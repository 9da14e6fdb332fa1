"""How state and batches are placed on devices and how the steps are compiled.

`make_runtime(...)` picks the strategy from the experiment: the default places
everything with `jax.jit` (sharded by the mesh and logical-axis rules when a mesh is
configured; see jaxformer/sharding.py), `parallelism="pmap"` replicates parameters and
splits the batch. The loop only talks to the `Runtime` interface below.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer import models, sharding
from jaxformer.config import ConfigError, ModelConfig
from jaxformer.train.state import TrainState, abstract_state, init_state
from jaxformer.train.step import make_eval_step, make_train_step

Batch = dict[str, Any]
log = logging.getLogger("jaxformer.sharding")


@dataclasses.dataclass
class Runtime:
    """Device placement + compiled steps for one run."""

    init_state: Callable[[jax.Array], TrainState]  # rng -> placed state
    train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]
    eval_step: Callable[[Any, Batch], dict[str, Any]]  # (params as in state, batch) -> sums
    put_batch: Callable[[Batch], Batch]  # host batch (this process's rows) -> device batch
    abstract_state: Callable[[TrainState], Any]  # placed state -> restore target (shapes + shardings)
    host_params: Callable[[TrainState], Any]  # state -> params usable by single-device code (decoding)


@dataclasses.dataclass(frozen=True)
class Steps:
    """The run's step functions, built once and not yet placed: each placement below only wraps them."""

    init: Callable[[jax.Array], TrainState]  # rng -> state
    train: Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]
    eval: Callable[[Any, Batch], dict[str, Any]]


def build_steps(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    train: Any,
    axis_name: str | None = None,
) -> Steps:
    """init / train / eval steps for `model_config`; `axis_name` (pmap) sums gradients and metrics over it.

    Training uses dropout when the config asks for it; evaluation never does.
    """
    deterministic = model_config.dropout_rate == 0 and model_config.attention_dropout_rate == 0
    train_model = models.build(model_config, deterministic=deterministic)
    return Steps(
        init=lambda rng: init_state(model_config, tx, rng),
        train=make_train_step(
            train_model,
            model_config,
            tx,
            schedule,
            train.grad_accum_steps,
            train.label_smoothing,
            axis_name=axis_name,
        ),
        eval=make_eval_step(models.build(model_config), model_config, axis_name=axis_name),
    )


def _shapes_with_shardings(state: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state)


def single_device_runtime(
    model_config: ModelConfig, tx: optax.GradientTransformation, schedule: optax.Schedule, train: Any
) -> Runtime:
    """Everything on the default device with `jax.jit`."""
    steps = build_steps(model_config, tx, schedule, train)
    return Runtime(
        init_state=jax.jit(steps.init),
        train_step=jax.jit(steps.train, donate_argnums=(0,)),
        eval_step=jax.jit(steps.eval),
        put_batch=lambda batch: batch,
        abstract_state=_shapes_with_shardings,
        host_params=lambda state: state.params,
    )


def sharded_runtime(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    train: Any,
    mesh: Mesh,
    rules: sharding.Rules,
) -> Runtime:
    """`jax.jit` over a ("data", "fsdp", "tensor") mesh: state sharded by the logical-axis rules,
    batch rows split over ("data", "fsdp"); each process supplies its own rows."""
    unsplit: list[str] = []
    state_shardings = sharding.state_shardings(abstract_state(model_config, tx), mesh, rules, unsplit)
    if unsplit and jax.process_index() == 0:
        kept = ", ".join(sorted(set(unsplit)))
        log.warning("sharding: these parameter axes stay whole (replicated), their sizes do not split: %s", kept)
    rows = sharding.batch_sharding(mesh)
    whole = sharding.replicated(mesh)
    steps = build_steps(model_config, tx, schedule, train)
    jit_init = jax.jit(steps.init, out_shardings=state_shardings)
    jit_train = jax.jit(
        steps.train, in_shardings=(state_shardings, rows), out_shardings=(state_shardings, whole), donate_argnums=(0,)
    )
    jit_eval = jax.jit(steps.eval, in_shardings=(state_shardings.params, rows), out_shardings=whole)
    jit_gather = jax.jit(lambda params: params, out_shardings=whole)
    # Rows this process must supply per batch: its share of the data-parallel shards.
    local_multiple = max(1, sharding.data_parallel_size(mesh) // jax.process_count())

    def in_mesh(fn: Any) -> Callable[..., Any]:
        """Call (and trace) `fn` with the mesh and rules active; `.lower(...)` shows the compiled program."""

        def call(*args: Any) -> Any:
            with sharding.mesh_context(mesh, rules):
                return fn(*args)

        def lower(*args: Any) -> Any:
            with sharding.mesh_context(mesh, rules):
                return fn.lower(*args)

        call.lower = lower  # type: ignore[attr-defined]
        return call

    def put_batch(batch: Batch) -> Batch:
        batch = sharding.pad_rows(batch, local_multiple)
        return {key: jax.make_array_from_process_local_data(rows, np.asarray(value)) for key, value in batch.items()}

    def host_params(state: TrainState) -> Any:
        gathered = in_mesh(jit_gather)(state.params)  # every device (and process) gets the whole tree
        return jax.tree.map(lambda x: x.addressable_data(0), gathered)

    return Runtime(
        init_state=in_mesh(jit_init),
        train_step=in_mesh(jit_train),
        eval_step=in_mesh(jit_eval),
        put_batch=put_batch,
        abstract_state=_shapes_with_shardings,
        host_params=host_params,
    )


def pmap_runtime(
    model_config: ModelConfig, tx: optax.GradientTransformation, schedule: optax.Schedule, train: Any
) -> Runtime:
    """Data parallel with `jax.pmap` over this process's devices (collectives span all processes).

    The state is one replicated array per leaf (a copy on every device; `in_axes=None`), the batch
    is reshaped to [devices, rows per device, ...], gradients and metric sums are `psum`med over
    "batch" inside the step, so the new state and the metrics come out unreplicated (`out_axes=None`).
    """
    devices = jax.local_devices()
    whole = NamedSharding(Mesh(np.asarray(devices), ("batch",)), P())
    steps = build_steps(model_config, tx, schedule, train, axis_name="batch")

    def pmapped(step: Callable[..., Any], **options: Any) -> Any:
        return jax.pmap(step, axis_name="batch", in_axes=(None, 0), out_axes=None, **options)

    def put_batch(batch: Batch) -> Batch:
        batch = sharding.pad_rows(batch, len(devices))
        return {
            key: np.asarray(value).reshape((len(devices), -1, *np.shape(value)[1:]))  # [devices, B/devices, ...]
            for key, value in batch.items()
        }

    return Runtime(
        init_state=jax.jit(steps.init, out_shardings=whole),
        train_step=pmapped(steps.train, donate_argnums=(0,)),
        eval_step=pmapped(steps.eval),
        put_batch=put_batch,
        abstract_state=_shapes_with_shardings,
        host_params=lambda state: jax.tree.map(lambda x: x.addressable_data(0), state.params),
    )


def check_parallelism(experiment: Any, model_config: ModelConfig) -> dict[str, int]:
    """Check the mesh, the rules, the heads and the batch against the devices; return the mesh sizes.

    Needs nothing but the configs, so the runner calls it before building the data pipeline
    (which may first train a tokenizer): a batch the mesh cannot split fails in a second.
    """
    device_count = jax.device_count()
    train = experiment.train
    rules = tuple(experiment.logical_axis_rules)
    sharding.check_rules(rules)
    if experiment.parallelism == "pmap" and (experiment.mesh.fsdp != 1 or experiment.mesh.tensor != 1):
        raise ConfigError(
            f"parallelism='pmap' is data parallel only, but mesh.fsdp={experiment.mesh.fsdp} and "
            f"mesh.tensor={experiment.mesh.tensor}; set both to 1 or use parallelism='jit'."
        )
    sizes = sharding.mesh_shape(experiment.mesh, device_count)
    if experiment.parallelism == "pmap":
        sharding.check_batch(train.batch_size, train.grad_accum_steps, device_count, "device count", per_device=True)
        return sizes
    sharding.check_model(model_config, sizes, rules)
    parallel = sizes["data"] * sizes["fsdp"]
    described = f"mesh.data={sizes['data']} x mesh.fsdp={sizes['fsdp']}"
    sharding.check_batch(train.batch_size, train.grad_accum_steps, parallel, described, per_device=False)
    return sizes


def make_runtime(
    experiment: Any,
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    sizes: dict[str, int] | None = None,
) -> Runtime:
    """The runtime the experiment asks for. `sizes`: the mesh sizes `check_parallelism` returned
    (a caller that checked first passes them, so the check runs once); None: check here.

    sizes: the mesh `check_parallelism` resolved (the runner resolves it once, before the data);
    None: resolve it here. parallelism="pmap": data parallel over every device. Otherwise `jax.jit`
    on a mesh; with a single device (and a mesh that asks for no more) the plain single-device runtime.
    """
    sizes = check_parallelism(experiment, model_config) if sizes is None else sizes
    train = experiment.train
    if experiment.parallelism == "pmap":
        return pmap_runtime(model_config, tx, schedule, train)
    if jax.device_count() == 1:
        return single_device_runtime(model_config, tx, schedule, train)
    return sharded_runtime(
        model_config, tx, schedule, train, sharding.make_mesh(sizes), tuple(experiment.logical_axis_rules)
    )
