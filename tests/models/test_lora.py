"""LoRA algebra (issue 21, Must show 1): B = 0 gives the base logits exactly; after training, merged and
unmerged forwards agree within 1e-6 (fp32); base params stay bit-identical over 20 steps and the optimizer
state holds adapter moments only. Each with scan_layers off and on (on: with remat)."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer import models, presets
from jaxformer.config import LORA_MODULES, ConfigError, LoraConfig, TrainConfig
from jaxformer.models import lora as lora_lib
from jaxformer.models.stack import stack_layer_params
from jaxformer.train.optim import make_lora_optimizer

ALL = tuple(LORA_MODULES)
SCAN = [pytest.param(False, id="unrolled"), pytest.param(True, id="scan+remat")]


def random_params(config, seed: int = 0):
    """Params of `config` drawn with NumPy from the abstract shapes (no XLA compile of the initialiser)."""
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(models.abstract_params(config))
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes)


def setup(preset: str, scan: bool, lora: LoraConfig, seed: int = 0, **overrides):
    config = presets.get(preset, scan_layers=scan, remat_policy="full" if scan else "none", **overrides)
    params = random_params(config, seed)
    adapters = lora_lib.init_lora(lora, params, jax.random.PRNGKey(seed + 1))
    return config, models.build(config), params, adapters


def tokens(config, seed: int = 0, shape=(2, 9)):
    return jnp.asarray(np.random.default_rng(seed).integers(1, config.vocab_size, shape), jnp.int32)


def lm_loss(model, base, adapters, lora, batch, rng=None):
    logits = lora_lib.apply(model, base, adapters, lora, batch[:, :-1], lora_dropout_rng=rng)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()


# Config ---------------------------------------------------------------------------------------


def test_config_is_validated_once_with_one_line_errors():
    assert LoraConfig(targets="query").targets == ("query",)
    assert LoraConfig(rank=4, alpha=8).scale == 2.0
    for kwargs, needle in [
        (dict(rank=0), "lora.rank=0"),
        (dict(rank=2.5), "lora.rank=2.5"),
        (dict(alpha=-1), "lora.alpha=-1"),
        (dict(dropout=1.0), "lora.dropout=1.0"),
        (dict(targets=()), "lora.targets=()"),
        (dict(targets=("qury",)), "Did you mean 'query'?"),
        (dict(targets=("layers_0/(query",)), "not a valid regular expression"),
    ]:
        with pytest.raises(ConfigError, match=None) as err:
            LoraConfig(**kwargs)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_every_module_name_has_a_kernel_layout():
    assert set(LORA_MODULES.values()) == set(lora_lib.KERNELS)


def test_targets_by_name_and_by_path_regex():
    config = presets.get("tiny-t5")
    params = models.abstract_params(config)
    by_name = lora_lib.find_adapters(LoraConfig(targets=("query", "down")), params)
    enc, dec = config.num_layers, config.decoder_layers
    assert len(by_name) == (enc + 2 * dec) + (enc + dec)  # queries: encoder self, decoder self + cross; MLP downs
    assert all(p.endswith(("query_kernel", "down_kernel")) for p in by_name)
    by_regex = lora_lib.find_adapters(LoraConfig(targets=(r"decoder/layers_1/cross_attention/(key|value)",)), params)
    assert sorted(by_regex) == [
        "decoder/layers_1/cross_attention/key_kernel",
        "decoder/layers_1/cross_attention/value_kernel",
    ]
    with pytest.raises(ValueError, match="matches no adaptable kernel"):
        lora_lib.find_adapters(LoraConfig(targets=("query", "embed/")), params)
    with pytest.raises(ValueError, match="match no kernel"):
        lora_lib.find_adapters(LoraConfig(targets=("gate",)), params)  # tiny-t5's MLP is not gated


# Algebra --------------------------------------------------------------------------------------


def test_update_is_the_numpy_low_rank_product():
    """W' = W + alpha/r * A B with the input axes flattened, for a 2-input-axis kernel (attention out [N, H, D])
    stacked under scan ([L, N, H, D]) and a plain MLP kernel."""
    lora = LoraConfig(rank=3, alpha=5.0, targets=("out", "up"))
    config, _, params, adapters = setup("tiny-gpt2", scan=True, lora=lora)
    rng = np.random.default_rng(0)
    adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), adapters)
    merged = lora_lib.merge(params, adapters, lora)
    for name in ("self_attention/out_kernel", "mlp/up_kernel"):
        w = np.asarray(params["decoder"]["layers"][name.split("/")[0]][name.split("/")[1]])
        ad = adapters["decoder"]["layers"][name.split("/")[0]][name.split("/")[1]]
        a, b = np.asarray(ad["lora_a"]), np.asarray(ad["lora_b"])
        layers = w.shape[0]
        want = np.stack(
            [w[i] + 5.0 / 3 * (a[i].reshape(-1, 3) @ b[i].reshape(3, -1)).reshape(w[i].shape) for i in range(layers)]
        )
        got = np.asarray(merged["decoder"]["layers"][name.split("/")[0]][name.split("/")[1]])
        assert got.shape == w.shape and layers == config.num_layers
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset, scan", [("tiny-t5", False)], ids=["t5"])  # decoders: in the training test
def test_step_zero_logits_equal_the_base_exactly(preset, scan):
    lora = LoraConfig(rank=4, targets=ALL)
    config, model, params, adapters = setup(preset, scan, lora)
    assert lora_lib.count(adapters) > 0
    assert all(not np.any(np.asarray(b)) for p, b in lora_lib.flat(adapters).items() if p.endswith("lora_b"))
    ids = tokens(config)
    inputs = (ids, ids[:, :5]) if config.family == "encoder_decoder" else (ids,)
    base = jax.jit(model.apply)({"params": params}, *inputs)
    ours = jax.jit(lambda p, a: lora_lib.apply(model, p, a, lora, *inputs))(params, adapters)
    assert np.array_equal(np.asarray(ours), np.asarray(base))


@pytest.mark.slow
def test_scanned_adapters_are_the_stacked_unrolled_ones():
    lora = LoraConfig(rank=2, targets=ALL)
    config, model, params, adapters = setup("tiny-llama", scan=False, lora=lora)
    rng = np.random.default_rng(3)
    adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.1, jnp.float32), adapters)
    scan_config = config.replace(scan_layers=True)
    scan_model = models.build(scan_config)
    n = config.num_layers
    scan_params = {**params, "decoder": stack_layer_params(params["decoder"], n)}
    scan_adapters = {"decoder": stack_layer_params(adapters["decoder"], n)}
    ids = tokens(config)
    unrolled = lora_lib.apply(model, params, adapters, lora, ids)
    scanned = lora_lib.apply(scan_model, scan_params, scan_adapters, lora, ids)
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(unrolled), atol=1e-5, rtol=1e-5)
    assert not np.allclose(np.asarray(unrolled), np.asarray(model.apply({"params": params}, ids)), atol=1e-3)


# Training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scan", SCAN)
def test_training_moves_adapters_only_and_merge_matches(scan):
    lora = LoraConfig(rank=4, alpha=8.0, dropout=0.1, targets=ALL)
    config, model, params, adapters = setup("tiny-gpt2", scan, lora)
    train = TrainConfig(steps=20, learning_rate=3e-2, warmup_steps=0, schedule="constant", weight_decay=0.01)
    tx, _ = make_lora_optimizer(train, config.d_model)
    state = {"base": params, "lora": adapters}
    opt_state = tx.init(state)
    ids = tokens(config, seed=2)
    forward = jax.jit(lambda p, a: lora_lib.apply(model, p, a, lora, ids))  # params as arguments, not constants
    unmerged_fn = functools.partial(forward, params)
    base = np.asarray(jax.jit(model.apply)({"params": params}, ids))
    assert np.array_equal(np.asarray(unmerged_fn(adapters)), base)  # step 0: B = 0, the base logits exactly

    @jax.jit
    def step(state, opt_state, batch, rng):
        # Gradients w.r.t. the whole tree: freezing, not the caller, keeps the base unchanged.
        loss, grads = jax.value_and_grad(lambda s: lm_loss(model, s["base"], s["lora"], lora, batch, rng))(state)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss, grads

    batch = tokens(config, seed=1, shape=(4, 12))
    losses = []
    for i in range(20):
        state, opt_state, loss, grads = step(state, opt_state, batch, jax.random.PRNGKey(100 + i))
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.1, losses
    assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads["base"]))  # gradients did reach the base...
    for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(state["base"]), strict=True):
        assert np.asarray(before).tobytes() == np.asarray(after).tobytes()  # ...and it stayed bit-identical

    # The optimizer state holds adapter moments only: AdamW's mu and nu (one adapter-sized leaf each) + counts.
    sizes = [x.size for x in jax.tree.leaves(opt_state) if hasattr(x, "size")]
    adapter_sizes = sorted(x.size for x in jax.tree.leaves(state["lora"]))
    assert sorted(s for s in sizes if s > 1) == sorted(adapter_sizes * 2)
    assert sum(sizes) <= 2 * lora_lib.count(state["lora"]) + 8
    smallest_base = min(x.size for x in jax.tree.leaves(params) if x.ndim >= 2)
    assert max(sizes) < smallest_base or max(sizes) in adapter_sizes

    trained = state["lora"]
    assert all(np.any(np.asarray(b)) for p, b in lora_lib.flat(trained).items() if p.endswith("lora_b"))
    unmerged = unmerged_fn(trained)
    merged_params = lora_lib.merge(params, trained, lora)
    merged = jax.jit(model.apply)({"params": merged_params}, ids)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(unmerged), atol=1e-6, rtol=0)
    assert np.abs(np.asarray(merged) - base).max() > 1e-3  # training changed the function


def test_adapters_shard_with_the_base_kernels():
    lora = LoraConfig(rank=2, targets=("query", "out", "down"))
    config = presets.get("tiny-gpt2", scan_layers=True)
    axes = lora_lib.lora_logical_axes(lora, models.abstract_params(config))
    layer = axes["decoder"]["layers"]
    P = jax.sharding.PartitionSpec
    assert layer["self_attention"]["query_kernel"] == {
        "lora_a": P("layers", "embed", None),
        "lora_b": P("layers", None, "heads", "kv"),
    }
    assert layer["self_attention"]["out_kernel"] == {
        "lora_a": P("layers", "heads", "kv", None),
        "lora_b": P("layers", None, "embed"),
    }
    assert layer["mlp"]["down_kernel"] == {"lora_a": P("layers", "mlp", None), "lora_b": P("layers", None, "embed")}
    adapters = lora_lib.init_lora(lora, random_params(config), jax.random.PRNGKey(1))
    assert jax.tree.structure(adapters) == jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, P))
    for spec, shape in zip(
        jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, P)), jax.tree.leaves(adapters), strict=True
    ):
        assert len(spec) == shape.ndim


def test_adapters_of_another_model_are_refused_in_one_line():
    lora = LoraConfig(rank=2, targets=("query",))
    small = random_params(presets.get("tiny-gpt2"))
    wide = random_params(presets.get("tiny-gpt2", d_model=40))
    adapters = lora_lib.init_lora(lora, wide, jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="another model size") as err:
        lora_lib.merge(small, adapters, lora)
    assert "\n" not in str(err.value)
    t5 = random_params(presets.get("tiny-t5"))
    with pytest.raises(ValueError, match="has no base kernel"):
        lora_lib.merge(small, lora_lib.init_lora(lora, t5, jax.random.PRNGKey(1)), lora)
    assert math.isclose(lora.scale, 8.0)
