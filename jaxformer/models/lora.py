"""LoRA adapters (Hu et al. 2021) on the kernels of any jaxformer model, applied as weight updates.

For a kernel W [*L, *I, *O] (L: the "layers" axis of a scanned stack, absent when unrolled; I the
input axes, O the output axes, e.g. query [D | N, H], attention output [N, H | D], MLP up [D | F]):

    A [*L, *I, r]   normal(0, 1/sqrt(prod I))   logical axes: W's L and I axes, then None (rank)
    B [*L, r, *O]   zeros                       logical axes: W's L axes, None, then W's O axes
    W' = W + (alpha / r) * einsum(A, B over r)

The adapter tree mirrors the parameter tree down to the adapted kernel, which holds
{"lora_a": A, "lora_b": B}, plus a full copy of each `lora.train_modules` module (e.g. a new
"classifier" head, trained as a whole like PEFT's modules_to_save; `merge` puts it in place): `init_lora` makes it, `merge(params, lora_params, lora)` folds it in, and
`apply` runs the unchanged base module on the merged weights inside the traced function, so the
adapters work with every layer option (fused q/k/v projections, `scan_layers`, remat, KV-cache
decoding) and shard with the base kernels (same logical axis names). Gradients reach A and B
through W'; the base params are inputs the optimizer never updates (`train.optim.freeze`).

Why not `qwix` (the LoRA library of MaxText/Tunix, evaluated at 0.1.8): it adds adapters by
intercepting `jnp.einsum`/`dot_general` whose right operand is a module parameter. jaxformer's
self-attention multiplies by the concatenation of the q/k/v kernels (one [D, 3NH] matmul), so q/k/v
got no adapters at all; and on the einsums it did recognise (MLP, attention output) it stores a
string attribute on the module, which Linen's `@nn.compact` modules refuse
(`SetAttributeFrozenModuleError`), with and without `scan_layers`.

Dropout: PEFT drops entries of the adapter's input x per token. With the update folded into W the
input is not visible, so `lora.dropout` here drops input features of A (rows of A, one draw per
training step shared by all tokens, kept rows scaled by 1/(1-p)). Without dropout (evaluation,
inference, export) the two are the same function.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxformer.config import LORA_MODULES, LoraConfig
from jaxformer.errors import CheckpointError, ConfigError

# Kernel leaf name -> (its ndim without a stacked layers axis, how many leading axes are inputs).
KERNELS: dict[str, tuple[int, int]] = {
    "query_kernel": (3, 1),  # [D, N, H]
    "key_kernel": (3, 1),  # [D, K, H]
    "value_kernel": (3, 1),
    "out_kernel": (3, 2),  # [N, H, D]
    "gate_kernel": (2, 1),  # [D, F]
    "up_kernel": (2, 1),
    "down_kernel": (2, 1),  # [F, D]
}
ADAPTER_LEAVES = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class Adapter:
    """Where one adapter goes: the kernel `path` ("decoder/layers/mlp/up_kernel") and its axis layout."""

    path: str
    shape: tuple[int, ...]
    lead: int  # stacked leading axes (1 under nn.scan, else 0)
    inputs: int  # input axes after them

    def a_shape(self, rank: int) -> tuple[int, ...]:
        return (*self.shape[: self.lead + self.inputs], rank)

    def b_shape(self, rank: int) -> tuple[int, ...]:
        return (*self.shape[: self.lead], rank, *self.shape[self.lead + self.inputs :])

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[self.lead : self.lead + self.inputs])


def flat(tree: Any) -> dict[str, Any]:
    """Nested dict (boxed or not) -> {"a/b/c": leaf}."""
    return {"/".join(k): v for k, v in flatten_dict(nn.meta.unbox(dict(tree))).items()}


def layout(path: str, ndim: int) -> tuple[int, int]:
    """(stacked leading axes, input axes) of the kernel at `path` with `ndim` axes."""
    base_ndim, inputs = KERNELS[path.rsplit("/", 1)[-1]]
    if ndim < base_ndim:
        raise ValueError(f"kernel {path} has {ndim} axes, fewer than the {base_ndim} of its kind")
    return ndim - base_ndim, inputs


def find_adapters(lora: LoraConfig, params: Any) -> dict[str, Adapter]:
    """The kernels of `params` (arrays or ShapeDtypeStructs, boxed or not) that `lora.targets` select."""
    kernels = {p: v for p, v in flat(params).items() if p.rsplit("/", 1)[-1] in KERNELS}
    chosen: dict[str, Adapter] = {}
    example = next(iter(sorted(kernels)), "none")
    for target in lora.targets:
        if target in LORA_MODULES:  # a module the model may lack (gate in a plain MLP): fine unless all are
            hits = [p for p in kernels if p.rsplit("/", 1)[-1] == LORA_MODULES[target]]
        else:
            hits = [p for p in kernels if re.search(target, p)]
            if not hits:
                raise ConfigError(
                    f"lora.targets entry {target!r} matches no adaptable kernel of this model "
                    f"(kernel paths look like {example!r}); fix lora.targets."
                )
        for p in hits:
            shape = tuple(kernels[p].shape)
            chosen[p] = Adapter(p, shape, *layout(p, len(shape)))
    if not chosen:
        raise ConfigError(f"lora.targets={list(lora.targets)} match no kernel of this model; fix lora.targets.")
    return dict(sorted(chosen.items()))


def trained_leaves(lora: LoraConfig, params: Any) -> dict[str, Any]:
    """The leaves of `params` under `lora.train_modules` (path -> leaf); ConfigError naming a missing module."""
    leaves = flat(params)
    tops = sorted({p.split("/", 1)[0] for p in leaves})
    missing = [m for m in lora.train_modules if m not in tops]
    if missing:
        raise ConfigError(f"lora.train_modules {missing} are not modules of this model; it has {tops}.")
    return {p: v for p, v in leaves.items() if p.split("/", 1)[0] in lora.train_modules}


def _copy(leaf: Any) -> jax.Array:
    """A new buffer with `leaf`'s value (never an alias: a train step may donate the adapters' buffers)."""
    if isinstance(leaf, jax.ShapeDtypeStruct):  # under eval_shape (abstract states)
        return jnp.zeros(leaf.shape, leaf.dtype)
    return jnp.array(leaf, copy=True)


def init_lora(lora: LoraConfig, params: Any, rng: jax.Array) -> dict[str, Any]:
    """Adapters for the kernels `lora.targets` select: A normal(0, 1/sqrt(fan_in)), B zeros (so W' = W);
    plus copies of the `lora.train_modules` parameters (so the model starts as the base)."""
    dtypes = {p: v.dtype for p, v in flat(params).items()}
    out = {p: _copy(v) for p, v in trained_leaves(lora, params).items()}
    for i, (path, ad) in enumerate(find_adapters(lora, params).items()):
        dtype = dtypes[path]
        a = jax.random.normal(jax.random.fold_in(rng, i), ad.a_shape(lora.rank), jnp.float32) * ad.fan_in**-0.5
        out[f"{path}/lora_a"] = a.astype(dtype)
        out[f"{path}/lora_b"] = jnp.zeros(ad.b_shape(lora.rank), dtype)
    return unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})


def lora_logical_axes(lora: LoraConfig, boxed_params: Any) -> dict[str, Any]:
    """PartitionSpecs of logical axis names for the adapters, taken from the base kernels' axes.

    boxed_params: `models.abstract_params(config)` (or any tree boxed with logical axes).
    E.g. query [D, N, H] ("embed", "heads", "kv") -> A ("embed", None), B (None, "heads", "kv").
    """
    specs = {"/".join(k): v for k, v in flatten_dict(dict(nn.get_partition_spec(boxed_params))).items()}
    out = {p: specs[p] for p in trained_leaves(lora, boxed_params)}
    for path, ad in find_adapters(lora, boxed_params).items():
        axes = tuple(specs[path])
        out[f"{path}/lora_a"] = jax.sharding.PartitionSpec(*axes[: ad.lead + ad.inputs], None)
        out[f"{path}/lora_b"] = jax.sharding.PartitionSpec(*axes[: ad.lead], None, *axes[ad.lead + ad.inputs :])
    return unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})


def box(lora_params: Any, axes: Any) -> Any:
    """Adapters boxed with their logical axes (`nn.LogicallyPartitioned`), e.g. for `sharding.param_shardings`."""
    return jax.tree.map(lambda x, spec: nn.LogicallyPartitioned(x, tuple(spec)), lora_params, axes)


def update(a: jax.Array, b: jax.Array, lead: int) -> jax.Array:
    """A [*L, *I, r], B [*L, r, *O] -> A B [*L, *I, *O] (`lead` = number of L axes)."""
    n_in, n_out = a.ndim - 1 - lead, b.ndim - 1 - lead
    letters = "abcdefghijklmnopq"
    stacked, ins, outs = letters[:lead], letters[lead : lead + n_in], letters[lead + n_in : lead + n_in + n_out]
    return jnp.einsum(f"{stacked}{ins}r,{stacked}r{outs}->{stacked}{ins}{outs}", a, b)


def adapter_pairs(lora_params: Any, train_modules: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """{kernel path: (A, B)} of an adapter tree (the copies of `train_modules` left out)."""
    leaves = {p: v for p, v in flat(lora_params).items() if p.split("/", 1)[0] not in train_modules}
    paths = sorted({p.rsplit("/", 1)[0] for p in leaves})
    bad = [p for p in leaves if p.rsplit("/", 1)[-1] not in ADAPTER_LEAVES]
    if bad:
        raise ValueError(f"adapter tree has leaves other than {ADAPTER_LEAVES}: {bad[:3]}")
    return {p: (leaves[f"{p}/lora_a"], leaves[f"{p}/lora_b"]) for p in paths}


def merge(params: Any, lora_params: Any, lora: LoraConfig, *, dropout_rng: jax.Array | None = None) -> dict[str, Any]:
    """params with every adapted kernel W replaced by W + (alpha / r) A B (same dtypes and structure).

    dropout_rng: training only; drops input rows of each A with probability `lora.dropout`.
    Raises ValueError (one line) when an adapter has no kernel of its shape in `params`.
    """
    base = {"/".join(k): v for k, v in flatten_dict(nn.meta.unbox(dict(params))).items()}
    for path, leaf in flat(lora_params).items():  # lora.train_modules: trained copies replace the base
        if path.split("/", 1)[0] in lora.train_modules:
            if path not in base or tuple(base[path].shape) != tuple(leaf.shape):
                raise CheckpointError(f"trained module parameter {path!r} does not fit the base model's parameters.")
            base[path] = leaf
    for i, (path, (a, b)) in enumerate(adapter_pairs(lora_params, lora.train_modules).items()):
        if path not in base:
            raise CheckpointError(
                f"adapter for {path!r} has no base kernel there: the adapters belong to another model."
            )
        kernel = base[path]
        lead, inputs = layout(path, kernel.ndim)
        want_in, want_out = kernel.shape[: lead + inputs], kernel.shape[lead + inputs :]
        if a.shape[:-1] != want_in or b.shape[:lead] + b.shape[lead + 1 :] != kernel.shape[:lead] + want_out:
            raise CheckpointError(
                f"adapter for {path!r} has A {tuple(a.shape)}, B {tuple(b.shape)} but the base kernel is "
                f"{tuple(kernel.shape)}: the adapters belong to another model size."
            )
        if dropout_rng is not None and lora.dropout > 0:
            keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, i), 1.0 - lora.dropout, (*a.shape[:-1], 1))
            a = jnp.where(keep, a / (1.0 - lora.dropout), 0).astype(a.dtype)
        base[path] = kernel + (lora.scale * update(a, b, lead)).astype(kernel.dtype)
    return unflatten_dict({tuple(k.split("/")): v for k, v in base.items()})


def apply(
    model: nn.Module,
    params: Any,
    lora_params: Any,
    lora: LoraConfig,
    *args: Any,
    lora_dropout_rng: jax.Array | None = None,
    **kwargs: Any,
) -> Any:
    """`model.apply` with the adapters: the base module on `merge(params, lora_params, lora)`."""
    merged = merge(params, lora_params, lora, dropout_rng=lora_dropout_rng)
    return model.apply({"params": merged}, *args, **kwargs)


def count(lora_params: Any) -> int:
    """Number of adapter parameters."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(lora_params)))
