"""`lora.train_modules` (PEFT's modules_to_save): a new classification head trains in full next to the
adapters. The copies start equal to the base (the model starts as the base), carry the base's logical
axes, receive gradients, and `merge` puts the trained copy in place; a missing module is one line."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer import models, presets
from jaxformer.config import ConfigError, LoraConfig
from jaxformer.models import lora as lora_lib


def setup():
    config = presets.get("tiny-bert", encoder_head="classification", num_classes=3)
    rng = np.random.default_rng(0)
    shapes = nn.meta.unbox(models.abstract_params(config))
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes)
    ids = jnp.asarray(rng.integers(3, config.vocab_size, (4, 7)), jnp.int32)
    return config, models.build(config), params, ids


def logits(model, params, ids):
    return model.apply({"params": params}, ids, valid=ids > 0)["logits"]


def test_head_copies_start_as_the_base_and_carry_its_axes() -> None:
    config, _, params, _ = setup()
    lora = LoraConfig(rank=2, targets=("query", "value"), train_modules=["classifier"])
    assert lora.train_modules == ("classifier",)
    adapters = lora_lib.init_lora(lora, params, jax.random.PRNGKey(1))
    base = lora_lib.flat(params)
    copies = {p: v for p, v in lora_lib.flat(adapters).items() if p.startswith("classifier/")}
    assert copies and set(copies) == {p for p in base if p.startswith("classifier/")}
    for path, leaf in copies.items():
        assert np.array_equal(np.asarray(leaf), np.asarray(base[path]))
        assert leaf.unsafe_buffer_pointer() != base[path].unsafe_buffer_pointer()  # a copy, never an alias
    boxed = models.abstract_params(config)
    specs = lora_lib.flat(nn.get_partition_spec(boxed))
    axes = lora_lib.flat(lora_lib.lora_logical_axes(lora, boxed))
    for path in copies:
        assert axes[path] == specs[path]
    assert set(axes) == set(lora_lib.flat(adapters))


def test_the_head_trains_and_merge_puts_it_in_place() -> None:
    _, model, params, ids = setup()
    lora = LoraConfig(rank=2, targets=("query", "value"), train_modules=("classifier",))
    adapters = lora_lib.init_lora(lora, params, jax.random.PRNGKey(1))
    base_logits = np.asarray(logits(model, params, ids))
    np.testing.assert_array_equal(
        np.asarray(lora_lib.apply(model, params, adapters, lora, ids, valid=ids > 0)["logits"]), base_logits
    )
    labels = jnp.asarray([0, 1, 2, 1])

    def loss(a):
        out = lora_lib.apply(model, params, a, lora, ids, valid=ids > 0)["logits"]
        return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

    tx = optax.adam(1e-2)
    opt = tx.init(adapters)
    grads = jax.grad(loss)(adapters)
    head_grads = [g for p, g in lora_lib.flat(grads).items() if p.startswith("classifier/")]
    assert head_grads and all(np.any(np.asarray(g)) for g in head_grads)
    trained = adapters
    for _ in range(5):
        updates, opt = tx.update(jax.grad(loss)(trained), opt, trained)
        trained = optax.apply_updates(trained, updates)
    merged = lora_lib.merge(params, trained, lora)
    for path, leaf in lora_lib.flat(trained).items():
        if path.startswith("classifier/"):
            assert np.array_equal(np.asarray(lora_lib.flat(merged)[path]), np.asarray(leaf))
            assert not np.array_equal(np.asarray(leaf), np.asarray(lora_lib.flat(params)[path]))
    unmerged = lora_lib.apply(model, params, trained, lora, ids, valid=ids > 0)["logits"]
    np.testing.assert_allclose(np.asarray(logits(model, merged, ids)), np.asarray(unmerged), atol=1e-6, rtol=0)
    assert float(loss(trained)) < float(loss(adapters))
    with pytest.raises(ValueError, match="leaves other than"):  # code unaware of train_modules refuses the tree
        lora_lib.adapter_pairs(trained)


def test_a_missing_module_is_one_line() -> None:
    _, _, params, _ = setup()
    with pytest.raises(ConfigError, match=r"lora.train_modules \['score'\] are not modules of this model; it has"):
        lora_lib.init_lora(LoraConfig(train_modules=("score",)), params, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="must list top-level module names"):
        LoraConfig(train_modules=("classifier/kernel",))
