"""Mesh-sharded and pmap training give the single-device result; shardings follow the rules.

The multi-device part runs once, in a subprocess with 8 fake CPU devices
(tests/support/multidevice_worker.py, `layouts` mode): a small GPT-style model trained 5 adamw steps
on the same fixed batches on 1 device, data=8, fsdp=8, data=2 x fsdp=2 x tensor=2 and pmap
over 8 devices. The configuration checks run in this process on plain values.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from support.fake_devices import result_of, run_worker

from jaxformer import presets, sharding
from jaxformer.config import ConfigError, MeshConfig
from jaxformer.experiment import DEFAULT_RULES, base_config, validate


@pytest.fixture(scope="module")
def layouts() -> dict[str, Any]:
    return result_of(run_worker(["layouts"], devices=8), keep_stderr=True)


LAYOUTS = ["data=8", "fsdp=8", "data=2 x fsdp=2 x tensor=2", "pmap 8"]


# 1. Same losses on every layout ---------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_losses_match_single_device(layouts: dict[str, Any], layout: str) -> None:
    reference = layouts["losses"]["1 device"]
    losses = layouts["losses"][layout]
    print(f"{layout}: {losses}  (1 device: {reference})")
    assert len(losses) == len(reference) == 5
    assert max(abs(a - b) for a, b in zip(losses, reference, strict=True)) <= 1e-5, (layout, losses, reference)
    assert len({round(x, 4) for x in reference}) > 1, "the loss should move: the steps must really train"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_eval_sums_match_and_padding_is_weightless(layouts: dict[str, Any], layout: str) -> None:
    # 13 rows are padded to a multiple of the data-parallel size with weight-0 rows.
    assert abs(layouts["eval"][layout] - layouts["eval"]["1 device"]) <= 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
def test_host_params_are_whole_on_one_device(layouts: dict[str, Any], layout: str) -> None:
    devices, shape = layouts["host_params"][layout]
    assert devices == 1 and shape == [64]


# 2. Shardings follow the rules ----------------------------------------------


def _is_large(shape: list[int]) -> bool:
    """Weight matrices and tables (every one has a D = 64 axis); biases and norm scales are small."""
    return math.prod(shape) >= 1024


def test_fsdp8_splits_every_weight_and_adam_moment_in_eight(layouts: dict[str, Any]) -> None:
    report = layouts["shards"]["fsdp=8"]
    checked = 0
    for tree in ("params", "mu", "nu"):
        for name, (full, shard) in report[tree].items():
            if _is_large(full):
                assert math.prod(shard) * 8 == math.prod(full), (tree, name, full, shard)
                checked += 1
    assert checked == 3 * 8  # query/key/value/out, up/down, token and position tables; x params, mu, nu


def test_replicated_layout_keeps_whole_copies(layouts: dict[str, Any]) -> None:
    for name, (full, shard) in layouts["shards"]["data=8"]["params"].items():
        assert full == shard, name


def test_tensor2_splits_attention_heads_in_two(layouts: dict[str, Any]) -> None:
    params = layouts["shards"]["data=2 x fsdp=2 x tensor=2"]["params"]
    attention = {k: v for k, v in params.items() if "attention" in k and "kernel" in k}
    assert len(attention) == 4
    for name, (full, shard) in attention.items():
        heads_axis = 0 if "out_kernel" in name else 1  # [D, N, H] projections, [N, H, D] output
        assert full[heads_axis] == 4 and shard[heads_axis] == 2, (name, full, shard)
    mlp = params["['decoder']['layers_0']['mlp']['up_kernel']"]
    assert mlp == [[64, 128], [32, 64]]  # embed over fsdp=2, mlp units over tensor=2


def test_activation_constraints_are_compiled_into_the_step(layouts: dict[str, Any]) -> None:
    constraints = layouts["constraints"]["data=2 x fsdp=2 x tensor=2"]
    assert len(constraints) >= 5, constraints
    # [B, T, D] activations: rows over data x fsdp; [B, T, N, H] queries: heads over tensor.
    assert any(c.startswith('[{"data", "fsdp"}, {}, {}]') for c in constraints), constraints
    assert any(c.startswith('[{"data", "fsdp"}, {}, {"tensor"}, {}]') for c in constraints), constraints


def test_no_layout_makes_xla_replicate_activations(layouts: dict[str, Any]) -> None:
    """XLA's SPMD partitioner warns when it can only reshard a tensor by replicating it; the embedding
    lookups did so on data=2 x fsdp=2 x tensor=2 (rows split along D, activations by batch)."""
    warnings = [line for line in layouts["stderr"].splitlines() if "Involuntary full rematerialization" in line]
    assert not warnings, "\n".join(line[:400] for line in warnings)


def test_fsdp8_holds_an_eighth_of_the_bytes(layouts: dict[str, Any]) -> None:
    full, split = layouts["bytes"]["data=8"], layouts["bytes"]["fsdp=8"]
    ratio = split / full
    print(f"per-device bytes of params + optimizer state: replicated {full}, fsdp=8 {split}, ratio {ratio:.4f}")
    assert 1 / 8 <= ratio < 0.14  # only biases sized by heads/mlp and the step counters stay whole


# 4. Bad settings: one clear error each ----------------------------------------


def test_mesh_product_must_equal_device_count() -> None:
    with pytest.raises(ConfigError, match=r"mesh: data=3 x fsdp=2 x tensor=1 = 6 devices, but 8 are available"):
        sharding.mesh_shape(MeshConfig(data=3, fsdp=2), 8)
    with pytest.raises(
        ConfigError, match=r"mesh.fsdp=3 x mesh.tensor=1 = 3 does not divide the 8 devices, so mesh.data=-1"
    ):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3), 8)
    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_tensor_size_must_divide_heads_and_kv_heads() -> None:
    sizes = {"data": 1, "fsdp": 2, "tensor": 4}
    with pytest.raises(ConfigError, match=r"mesh.tensor=4 does not divide model.num_heads=6"):
        sharding.check_model(presets.get("tiny-gpt2", num_heads=6, d_model=36), sizes, DEFAULT_RULES)
    with pytest.raises(ConfigError, match=r"mesh.tensor=4 does not divide model.num_kv_heads=2"):
        sharding.check_model(presets.get("tiny-llama", num_heads=8, d_model=64), sizes, DEFAULT_RULES)
    sharding.check_model(presets.get("tiny-llama", num_heads=8, num_kv_heads=4, d_model=64), sizes, DEFAULT_RULES)


def test_batch_must_divide_data_parallel_size() -> None:
    with pytest.raises(ConfigError, match=r"train.batch_size=12 is not divisible by the data-parallel size 8"):
        sharding.check_batch(12, 1, 8, "mesh.data=4 x mesh.fsdp=2", per_device=False)
    with pytest.raises(ConfigError, match=r"gives 2 rows per device, not divisible by train.grad_accum_steps=4"):
        sharding.check_batch(16, 4, 8, "device count", per_device=True)


def test_unknown_logical_axis_in_rules() -> None:
    rules = (*DEFAULT_RULES, ("hiddden", "tensor"))
    with pytest.raises(ConfigError, match=r"logical_axis_rules: unknown logical axis 'hiddden'"):
        sharding.check_rules(rules)
    with pytest.raises(ConfigError, match=r"maps to unknown mesh axis 'model'"):
        sharding.check_rules((("heads", "model"),))


def test_make_runtime_reports_each_bad_setting(layouts: dict[str, Any]) -> None:
    errors = layouts["errors"]
    assert "mesh: data=3 x fsdp=2 x tensor=1 = 6 devices, but 8 are available" in errors["mesh product"]
    assert "mesh.tensor=8 does not divide model.num_heads=4" in errors["tensor vs heads"]
    assert "train.batch_size=12 is not divisible by the data-parallel size 8" in errors["batch vs data parallel"]
    assert "train.batch_size=20 is not divisible by the data-parallel size 8 (device count)" in errors["pmap batch"]
    assert all(message.startswith("ConfigError") for message in errors.values())


def test_make_runtime_checks_rules_first_in_process() -> None:
    import optax

    from jaxformer.train.runtime import make_runtime

    config = base_config()
    config.data = {}
    config.logical_axis_rules = [["heads", "tensor"], ["activation_batchh", "data"]]
    experiment = validate(config)
    with pytest.raises(ConfigError, match=r"unknown logical axis 'activation_batchh'"):
        make_runtime(experiment, experiment.model, optax.sgd(0.1), optax.constant_schedule(0.1))


def test_pmap_refuses_model_parallel_axes() -> None:
    import optax

    from jaxformer.train.runtime import make_runtime

    config = base_config()
    config.data = {}
    config.parallelism = "pmap"
    config.mesh.fsdp = 2
    experiment = validate(config)
    with pytest.raises(ConfigError, match=r"parallelism='pmap' is data parallel only"):
        make_runtime(experiment, experiment.model, optax.sgd(0.1), optax.constant_schedule(0.1))


def test_uneven_dimension_stays_whole() -> None:
    from jax.sharding import AbstractMesh

    mesh = AbstractMesh((1, 2, 4), sharding.MESH_AXES)
    # vocab 99 cannot split over tensor=4: that dimension stays whole; embed 36 splits over fsdp=2.
    assert tuple(sharding.logical_sharding(("vocab", "embed"), (99, 36), mesh, DEFAULT_RULES).spec) == (None, "fsdp")
    assert tuple(sharding.logical_sharding(("vocab", "embed"), (96, 36), mesh, DEFAULT_RULES).spec) == (
        "tensor",
        "fsdp",
    )
    assert tuple(sharding.logical_sharding(("heads", "kv"), (6, 8), mesh, DEFAULT_RULES).spec) == (None, None)


@pytest.mark.slow  # additional model shapes; the default suite covers the plain decoder above
def test_gqa_scanned_and_uneven_models_match_single_device() -> None:
    result = result_of(run_worker(["variants"], devices=8), keep_stderr=True)
    assert "Involuntary full rematerialization" not in result.pop("stderr")
    for name, runs in result.items():
        print(f"{name}: 2x2x2 {runs['2x2x2']}, 1 device {runs['1 device']}")
        assert max(abs(a - b) for a, b in zip(runs["2x2x2"], runs["1 device"], strict=True)) <= 1e-5, name
        assert runs["split_params"] >= 4, name
