"""The question-answering and token-classification heads of the encoder-only model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from jaxformer import models
from jaxformer.config import ConfigError, ModelConfig


def tiny(head: str, **extra) -> ModelConfig:
    return ModelConfig(
        family="encoder_only",
        vocab_size=31,
        d_model=12,
        num_heads=3,
        d_ff=17,
        num_layers=2,
        max_len=16,
        norm_position="post",
        embedding_norm=True,
        num_token_types=2,
        encoder_head=head,
        num_classes=5,
        **extra,
    )


@pytest.mark.parametrize("head", ["qa", "token_classification"])
def test_head_is_a_dense_on_every_token(head):
    config = tiny(head)
    model = models.build(config)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 31, (2, 7)))
    params = nn.unbox(model.init(jax.random.PRNGKey(0), tokens)["params"])
    out = model.apply({"params": params}, tokens)
    name = {"qa": "qa_head", "token_classification": "token_classifier"}[head]
    kernel, bias = (np.asarray(params[name]["dense"][k]) for k in ("kernel", "bias"))
    expected = np.einsum("btd,dc->btc", np.asarray(out["hidden"]), kernel) + bias  # NumPy reference
    if head == "qa":
        assert sorted(out) == ["end_logits", "hidden", "start_logits"]
        np.testing.assert_allclose(out["start_logits"], expected[..., 0], atol=1e-5)
        np.testing.assert_allclose(out["end_logits"], expected[..., 1], atol=1e-5)
    else:
        assert sorted(out) == ["hidden", "logits"] and out["logits"].shape == (2, 7, 5)
        np.testing.assert_allclose(out["logits"], expected, atol=1e-5)


@pytest.mark.parametrize("head", ["qa", "token_classification"])
def test_head_params_have_logical_axes(head):
    specs = {"/".join(k): v for k, v in flatten_dict(dict(models.logical_axes(tiny(head)))).items()}
    name = {"qa": "qa_head", "token_classification": "token_classifier"}[head]
    assert tuple(specs[f"{name}/dense/kernel"]) == ("embed", "classes")
    assert tuple(specs[f"{name}/dense/bias"]) == ("classes",)
    assert all(spec is not None and None not in tuple(spec) for spec in specs.values())


def test_token_classifier_dropout_applies_in_training_only():
    config = tiny("token_classification", dropout_rate=0.5)
    tokens = jnp.ones((2, 7), jnp.int32)
    params = nn.unbox(models.build(config).init(jax.random.PRNGKey(0), tokens)["params"])
    a = models.build(config, deterministic=False).apply(
        {"params": params}, tokens, rngs={"dropout": jax.random.PRNGKey(1)}
    )["logits"]
    b = models.build(config).apply({"params": params}, tokens)["logits"]
    assert not np.allclose(a, b)


def test_token_classification_needs_a_class():
    with pytest.raises(ConfigError, match="num_classes=0 must be >= 1 for encoder_head='token_classification'"):
        tiny("token_classification").replace(num_classes=0)
