"""How state and batches are placed on devices and how the steps are compiled.

`make_runtime(...)` picks the strategy from the experiment: the default places
everything with `jax.jit` (sharded by the mesh and logical-axis rules when a mesh is
configured; see jaxformer/sharding.py), `parallelism="pmap"` replicates parameters and
splits the batch. The loop only talks to the `Runtime` interface below.

Two variations, the same for every strategy: a `Start` (train/init_from.py) supplies the first
parameters instead of a fresh initialisation (placed straight into the state's shardings), and
`experiment.lora` makes the state's params the LoRA adapters alone: the frozen base is held by the
runtime (placed with the base kernels' shardings, replicated under pmap), passed to every step as an
argument and merged into the kernels inside the traced function (models/lora.py), so it is neither
in the optimizer state nor in the checkpoints. `state_target(rng)` gives the restore target without
computing (or importing) anything, so a resumed run never re-imports its `model.init_from`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer import models, sharding
from jaxformer.config import ConfigError, LoraConfig, ModelConfig
from jaxformer.models import lora as lora_lib
from jaxformer.train import init_from
from jaxformer.train.state import (
    TrainState,
    abstract_lora_state,
    abstract_state,
    base_rng,
    init_lora_state,
    init_state,
    state_from_params,
)
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
    state_target: Callable[[jax.Array], Any] | None = None  # rng -> restore target, nothing computed
    base_reference: Callable[[], dict[str, Any] | None] = lambda: None  # saved with checkpoints (train/init_from.py)


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


class LoraModel:
    """`model.apply` on the base params with the adapters merged in: what the step functions call for a
    LoRA run (the params they differentiate are the adapters; `base` is a traced argument, never a constant).

    Adapter dropout (lora.dropout) draws from the step's dropout key, folded so it differs from the model's.
    """

    def __init__(self, model: nn.Module, base: Any, lora: LoraConfig) -> None:
        self.model, self.base, self.lora = model, base, lora

    def apply(self, variables: dict[str, Any], *args: Any, rngs: dict[str, jax.Array] | None = None, **kw: Any) -> Any:
        drop = jax.random.fold_in(rngs["dropout"], 0x10A) if rngs and self.lora.dropout > 0 else None
        merged = lora_lib.merge(self.base, variables["params"], self.lora, dropout_rng=drop)
        return self.model.apply({"params": merged}, *args, rngs=rngs, **kw)


@dataclasses.dataclass(frozen=True)
class LoraSteps:
    """A LoRA run's steps: the frozen base is their second argument."""

    init: Callable[[jax.Array, Any], TrainState]  # (rng, base) -> state of fresh adapters
    from_adapters: Callable[[jax.Array, Any], TrainState]  # (rng, adapters) -> state around given adapters
    train: Callable[[TrainState, Any, Batch], tuple[TrainState, dict[str, Any]]]
    eval: Callable[[Any, Any, Batch], dict[str, Any]]  # (adapters, base, batch) -> sums
    merged: Callable[[Any, Any], Any]  # (adapters, base) -> merged params (decoding, export)


def build_lora_steps(
    model_config: ModelConfig,
    lora: LoraConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    train: Any,
    axis_name: str | None = None,
) -> LoraSteps:
    """`build_steps` for a LoRA run: the same train/eval steps, on a `LoraModel` built inside the trace."""
    deterministic = model_config.dropout_rate == 0 and model_config.attention_dropout_rate == 0 and lora.dropout == 0
    train_model, eval_model = models.build(model_config, deterministic=deterministic), models.build(model_config)

    def train_step(state: TrainState, base: Any, batch: Batch) -> tuple[TrainState, dict[str, Any]]:
        step = make_train_step(
            LoraModel(train_model, base, lora),
            model_config,
            tx,
            schedule,
            train.grad_accum_steps,
            train.label_smoothing,
            axis_name=axis_name,
        )
        return step(state, batch)

    def eval_step(adapters: Any, base: Any, batch: Batch) -> dict[str, Any]:
        return make_eval_step(LoraModel(eval_model, base, lora), model_config, axis_name=axis_name)(adapters, batch)

    return LoraSteps(
        init=lambda rng, base: init_lora_state(lora, base, tx, rng),
        from_adapters=lambda rng, adapters: state_from_params(adapters, tx, rng),
        train=train_step,
        eval=eval_step,
        merged=lambda adapters, base: lora_lib.merge(base, adapters, lora),
    )


class FrozenBase:
    """A LoRA run's base weights: imported (`start`) or initialised from the run's seed, once, on first use;
    placed by `place`; fingerprinted (train/init_from.py) so its checkpoints can name the base they need."""

    def __init__(self, model_config: ModelConfig, start: init_from.Start | None, place: Callable[[Any], Any]) -> None:
        self.model_config, self.start, self.place = model_config, start, place
        self.rng: jax.Array | None = None
        self.params: Any = None
        self.fingerprint: str | None = None

    def get(self) -> Any:
        if self.params is None:
            if self.start is not None:
                host = self.start.params(self.model_config)
            else:
                if self.rng is None:
                    raise RuntimeError(
                        "the LoRA base is initialised from the run's key: call state_target/init_state first"
                    )
                host = models.init_params(self.model_config, base_rng(self.rng))
            self.fingerprint = init_from.fingerprint(host)
            self.params = self.place(host)
        return self.params

    def reference(self) -> dict[str, Any]:
        self.get()
        start = self.start or init_from.Start("", lambda config: None)
        return start.reference(self.fingerprint)


def _shapes_with_shardings(state: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state)


def _target(abstract: Any, shardings: Any) -> Any:
    """Unboxed abstract state + shardings (a tree like it, or one Sharding for all) -> restore target."""
    plain = nn.meta.unbox(abstract)
    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), plain, shardings)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shardings), plain)


def _abstract(model_config: ModelConfig, tx: optax.GradientTransformation, lora: LoraConfig | None) -> Any:
    return abstract_state(model_config, tx) if lora is None else abstract_lora_state(model_config, lora, tx)


def _reference(start: init_from.Start | None) -> Callable[[], dict[str, Any] | None]:
    return (lambda: start.reference(None)) if start is not None else (lambda: None)


def single_device_runtime(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    train: Any,
    lora: LoraConfig | None = None,
    start: init_from.Start | None = None,
) -> Runtime:
    """Everything on the default device with `jax.jit`."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = lambda rng: _target(_abstract(model_config, tx, lora), device)  # noqa: E731
    if lora is not None:
        return _lora_runtime(
            build_lora_steps(model_config, lora, tx, schedule, train),
            FrozenBase(model_config, start, lambda host: jax.device_put(host, device)),
            jit=_plain_jit(train={"donate_argnums": (0,)}),
            put_batch=lambda batch: batch,
            host=lambda tree: tree,
            target=target,
        )
    steps = build_steps(model_config, tx, schedule, train)
    init = jax.jit(steps.init)
    if start is not None:
        from_params = jax.jit(lambda params, rng: state_from_params(params, tx, rng))
        init = lambda rng: from_params(start.params(model_config), rng)  # noqa: E731
    return Runtime(
        init_state=init,
        train_step=jax.jit(steps.train, donate_argnums=(0,)),
        eval_step=jax.jit(steps.eval),
        put_batch=lambda batch: batch,
        abstract_state=_shapes_with_shardings,
        host_params=lambda state: state.params,
        state_target=target,
        base_reference=_reference(start),
    )


def _lora_runtime(
    steps: LoraSteps,
    base: FrozenBase,
    jit: Callable[..., Any],
    put_batch: Callable[[Batch], Batch],
    host: Callable[[Any], Any],
    target: Callable[[jax.Array], Any],
    train_jit: Callable[..., Any] | None = None,
    eval_jit: Callable[..., Any] | None = None,
) -> Runtime:
    """The Runtime of a LoRA run: `jit(fn, **options)` compiles (and places) a step; the base is bound here."""
    init = jit(steps.init, role="init")
    from_adapters = jit(steps.from_adapters, role="from_adapters")
    train_step = (train_jit or jit)(steps.train, role="train")
    eval_step = (eval_jit or jit)(steps.eval, role="eval")
    merged = jit(steps.merged, role="merged")

    def remember(rng: jax.Array) -> None:
        base.rng = rng if base.rng is None else base.rng

    def state_target(rng: jax.Array) -> Any:
        remember(rng)
        return target(rng)

    def init_state(rng: jax.Array) -> TrainState:
        remember(rng)
        if base.start is not None and base.start.adapters is not None:  # lora.init_adapter
            return from_adapters(rng, base.start.adapters)
        return init(rng, base.get())

    return Runtime(
        init_state=init_state,
        train_step=lambda state, batch: train_step(state, base.get(), batch),
        eval_step=lambda adapters, batch: eval_step(adapters, base.get(), batch),
        put_batch=put_batch,
        abstract_state=_shapes_with_shardings,
        host_params=lambda state: host(merged(state.params, base.get())),
        state_target=state_target,
        base_reference=base.reference,
    )


def _plain_jit(**fixed: Any) -> Callable[..., Any]:
    """`jit(fn, role=...)` for `_lora_runtime`: jax.jit with the options of each role (train donates its state)."""

    def jit(fn: Callable[..., Any], role: str) -> Any:
        options = dict(fixed.get(role, {}))
        return jax.jit(fn, **options)

    return jit


def sharded_runtime(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    train: Any,
    mesh: Mesh,
    rules: sharding.Rules,
    lora: LoraConfig | None = None,
    start: init_from.Start | None = None,
) -> Runtime:
    """`jax.jit` over a ("data", "fsdp", "tensor") mesh: state sharded by the logical-axis rules,
    batch rows split over ("data", "fsdp"); each process supplies its own rows."""
    unsplit: list[str] = []
    abstract = _abstract(model_config, tx, lora)
    state_shardings = sharding.state_shardings(abstract, mesh, rules, unsplit)
    param_shardings = sharding.param_shardings(models.abstract_params(model_config), mesh, rules, unsplit)
    if unsplit and jax.process_index() == 0:
        kept = ", ".join(sorted(set(unsplit)))
        log.warning("sharding: these parameter axes stay whole (replicated), their sizes do not split: %s", kept)
    rows = sharding.batch_sharding(mesh)
    whole = sharding.replicated(mesh)
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

    def gathered(tree: Any) -> Any:
        return jax.tree.map(lambda x: x.addressable_data(0), tree)

    target = lambda rng: _target(abstract, state_shardings)  # noqa: E731
    if lora is not None:
        roles = {
            "init": {"in_shardings": (None, param_shardings), "out_shardings": state_shardings},
            "from_adapters": {"in_shardings": (None, state_shardings.params), "out_shardings": state_shardings},
            "train": {
                "in_shardings": (state_shardings, param_shardings, rows),
                "out_shardings": (state_shardings, whole),
                "donate_argnums": (0,),
            },
            "eval": {"in_shardings": (state_shardings.params, param_shardings, rows), "out_shardings": whole},
            "merged": {"in_shardings": (state_shardings.params, param_shardings), "out_shardings": whole},
        }
        jit = _plain_jit(**roles)
        return _lora_runtime(
            build_lora_steps(model_config, lora, tx, schedule, train),
            FrozenBase(model_config, start, lambda host: jax.device_put(host, param_shardings)),
            jit=lambda fn, role: in_mesh(jit(fn, role)),
            put_batch=put_batch,
            host=gathered,
            target=target,
        )
    steps = build_steps(model_config, tx, schedule, train)
    jit_init = jax.jit(steps.init, out_shardings=state_shardings)
    jit_train = jax.jit(
        steps.train, in_shardings=(state_shardings, rows), out_shardings=(state_shardings, whole), donate_argnums=(0,)
    )
    jit_eval = jax.jit(steps.eval, in_shardings=(state_shardings.params, rows), out_shardings=whole)
    jit_gather = jax.jit(lambda params: params, out_shardings=whole)
    init_state = in_mesh(jit_init)
    if start is not None:  # each imported tensor goes straight into its shards
        jit_from = jax.jit(
            lambda params, rng: state_from_params(params, tx, rng),
            in_shardings=(param_shardings, None),
            out_shardings=state_shardings,
        )
        init_state = lambda rng: in_mesh(jit_from)(start.params(model_config), rng)  # noqa: E731

    def host_params(state: TrainState) -> Any:
        return gathered(in_mesh(jit_gather)(state.params))  # every device (and process) gets the whole tree

    return Runtime(
        init_state=init_state,
        train_step=in_mesh(jit_train),
        eval_step=in_mesh(jit_eval),
        put_batch=put_batch,
        abstract_state=_shapes_with_shardings,
        host_params=host_params,
        state_target=target,
        base_reference=_reference(start),
    )


def pmap_runtime(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    train: Any,
    lora: LoraConfig | None = None,
    start: init_from.Start | None = None,
) -> Runtime:
    """Data parallel with `jax.pmap` over this process's devices (collectives span all processes).

    The state is one replicated array per leaf (a copy on every device; `in_axes=None`), the batch
    is reshaped to [devices, rows per device, ...], gradients and metric sums are `psum`med over
    "batch" inside the step, so the new state and the metrics come out unreplicated (`out_axes=None`).
    A LoRA run's base is one more replicated argument (`in_axes=None`).
    """
    devices = jax.local_devices()
    whole = NamedSharding(Mesh(np.asarray(devices), ("batch",)), P())

    def put_batch(batch: Batch) -> Batch:
        batch = sharding.pad_rows(batch, len(devices))
        return {
            key: np.asarray(value).reshape((len(devices), -1, *np.shape(value)[1:]))  # [devices, B/devices, ...]
            for key, value in batch.items()
        }

    target = lambda rng: _target(_abstract(model_config, tx, lora), whole)  # noqa: E731
    first = lambda tree: jax.tree.map(lambda x: x.addressable_data(0), tree)  # noqa: E731
    if lora is not None:

        def jit(fn: Callable[..., Any], role: str) -> Any:
            if role in ("train", "eval"):
                options = {"donate_argnums": (0,)} if role == "train" else {}
                return jax.pmap(fn, axis_name="batch", in_axes=(None, None, 0), out_axes=None, **options)
            return jax.jit(fn, out_shardings=whole)

        return _lora_runtime(
            build_lora_steps(model_config, lora, tx, schedule, train, axis_name="batch"),
            FrozenBase(model_config, start, lambda host: jax.device_put(host, whole)),
            jit=jit,
            put_batch=put_batch,
            host=first,
            target=target,
        )
    steps = build_steps(model_config, tx, schedule, train, axis_name="batch")

    def pmapped(step: Callable[..., Any], **options: Any) -> Any:
        return jax.pmap(step, axis_name="batch", in_axes=(None, 0), out_axes=None, **options)

    init_state = jax.jit(steps.init, out_shardings=whole)
    if start is not None:
        jit_from = jax.jit(lambda params, rng: state_from_params(params, tx, rng), out_shardings=whole)
        init_state = lambda rng: jit_from(start.params(model_config), rng)  # noqa: E731
    return Runtime(
        init_state=init_state,
        train_step=pmapped(steps.train, donate_argnums=(0,)),
        eval_step=pmapped(steps.eval),
        put_batch=put_batch,
        abstract_state=_shapes_with_shardings,
        host_params=lambda state: first(state.params),
        state_target=target,
        base_reference=_reference(start),
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
    start: init_from.Start | None = None,
) -> Runtime:
    """The runtime the experiment asks for. `sizes`: the mesh sizes `check_parallelism` returned
    (a caller that checked first passes them, so the check runs once); None: check here.

    sizes: the mesh `check_parallelism` resolved (the runner resolves it once, before the data);
    None: resolve it here. parallelism="pmap": data parallel over every device. Otherwise `jax.jit`
    on a mesh; with a single device (and a mesh that asks for no more) the plain single-device runtime.
    """
    sizes = check_parallelism(experiment, model_config) if sizes is None else sizes
    train = experiment.train
    lora = getattr(experiment, "lora", None)
    if experiment.parallelism == "pmap":
        return pmap_runtime(model_config, tx, schedule, train, lora, start)
    if jax.device_count() == 1:
        return single_device_runtime(model_config, tx, schedule, train, lora, start)
    return sharded_runtime(
        model_config,
        tx,
        schedule,
        train,
        sharding.make_mesh(sizes),
        tuple(experiment.logical_axis_rules),
        lora,
        start,
    )
