"""`relative_bias_per_layer` (umT5): every self-attention layer adds the bias of its own table.

Reference: the umT5 encoder written in NumPy (Chung et al. 2023: T5 v1.1 layers, no attention scaling,
bucketed relative bias looked up from layer i's table [buckets, N] in layer i), on a padded batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import models, presets
from jaxformer.config import ModelConfig
from jaxformer.errors import ConfigError
from jaxformer.hf.convert import nested, param_shapes

BUCKETS, MAX_DISTANCE = 8, 20


def numpy_buckets(relative: np.ndarray, bidirectional: bool) -> np.ndarray:
    """T5 buckets of key - query positions, element by element with Python integers and math.log."""

    def one(r: int) -> int:
        n, out = BUCKETS, 0
        if bidirectional:
            n //= 2
            out = n if r > 0 else 0
            d = abs(r)
        else:
            d = max(-r, 0)
        exact = n // 2
        if d < exact:
            return out + d
        return out + min(n - 1, exact + int(math.log(d / exact) / math.log(MAX_DISTANCE / exact) * (n - exact)))

    return np.vectorize(one)(relative)


def rms(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps) * scale


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def numpy_encoder(p: dict, config: ModelConfig, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """ids [B, T], valid [B, T] -> encoder output [B, T, D] (float64)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = p["embed"]["embedding"][ids]  # [B, T, D]
    t = ids.shape[1]
    buckets = numpy_buckets(np.arange(t)[None, :] - np.arange(t)[:, None], bidirectional=True)  # [T, S]
    for i in range(config.num_layers):
        layer = p["encoder"][f"layers_{i}"]
        att = layer["self_attention"]
        h = rms(x, layer["self_attention_norm"]["scale"], config.norm_eps)
        q, k, v = (np.einsum("btd,dnh->bnth", h, att[f"{n}_kernel"]) for n in ("query", "key", "value"))
        bias = np.transpose(layer["relative_position_bias"]["embedding"][buckets], (2, 0, 1))  # [N, T, S]
        logits = np.einsum("bnth,bnsh->bnts", q, k) + bias[None]
        logits = np.where(valid[:, None, None, :], logits, -1e30)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        x = x + np.einsum("bnts,bnsh,nhd->btd", weights, v, att["out_kernel"])
        mlp = layer["mlp"]
        h = rms(x, layer["mlp_norm"]["scale"], config.norm_eps)
        x = x + (gelu_tanh(h @ mlp["gate_kernel"]) * (h @ mlp["up_kernel"])) @ mlp["down_kernel"]
    return rms(x, p["encoder"]["final_norm"]["scale"], config.norm_eps)


@pytest.fixture(scope="module")
def setup():
    config = presets.get("tiny-umt5")
    assert config.relative_bias_per_layer and (config.relative_buckets, config.relative_max_distance) == (8, 20)
    rng = np.random.default_rng(0)
    flat = {k: rng.normal(0.0, 0.3, s).astype(np.float32) for k, s in param_shapes(config).items()}
    ids = rng.integers(1, config.vocab_size, (3, 9))
    valid = np.arange(9)[None, :] < np.array([9, 6, 4])[:, None]
    return config, nested(flat), ids, valid


def encode(config: ModelConfig, params: dict, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    model = models.build(config)
    fn = jax.jit(lambda p, s, m: model.apply({"params": p}, s, m, method="encode"))
    return np.asarray(fn(params, jnp.asarray(ids), jnp.asarray(valid)))


def test_every_self_attention_layer_owns_a_table(setup):
    config, params, _, _ = setup
    for stack, layers in (("encoder", config.num_layers), ("decoder", config.decoder_layers)):
        assert "relative_position_bias" not in params[stack]
        for i in range(layers):
            assert params[stack][f"layers_{i}"]["relative_position_bias"]["embedding"].shape == (8, config.num_heads)
    shared = param_shapes(config.replace(relative_bias_per_layer=False))
    assert "encoder/relative_position_bias/embedding" in shared
    assert not any("layers_0/relative_position_bias" in k for k in shared)


def test_encoder_matches_numpy_reference(setup):
    config, params, ids, valid = setup
    ours = encode(config, params, ids, valid)
    want = numpy_encoder(params, config, ids, valid)
    np.testing.assert_allclose(ours[valid], want[valid], atol=2e-5, rtol=0)
    assert np.abs(want).max() > 0.5
    # Layer 1 reading layer 0's table (one shared table) changes the output: the tables are used per layer.
    swapped = jax.tree.map(lambda a: a, params)
    enc = swapped["encoder"]
    enc["layers_1"] = {**enc["layers_1"], "relative_position_bias": enc["layers_0"]["relative_position_bias"]}
    assert np.abs(encode(config, swapped, ids, valid) - ours)[valid].max() > 1e-3


def test_scanned_layers_give_the_same_output(setup):
    config, params, ids, valid = setup
    scanned = {k: models.stack_layer_params(v, config.num_layers) if k == "encoder" else v for k, v in params.items()}
    scanned["decoder"] = models.stack_layer_params(params["decoder"], config.decoder_layers)
    ours = encode(config.replace(scan_layers=True), scanned, ids, valid)
    np.testing.assert_allclose(ours, encode(config, params, ids, valid), atol=1e-6, rtol=0)


def test_per_layer_bias_needs_relative_positions():
    with pytest.raises(ConfigError, match=r"relative_bias_per_layer=True .* needs position='relative'"):
        ModelConfig(family="encoder_decoder", position="learned", relative_bias_per_layer=True)
