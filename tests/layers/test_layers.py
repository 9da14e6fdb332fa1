"""Reference tests for norms, feed-forward, masks and one TransformerBlock against NumPy formulas."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.config import ModelConfig
from jaxformer.layers import (
    FeedForward,
    LayerNorm,
    RMSNorm,
    TransformerBlock,
    causal_mask,
    combine,
    key_padding_mask,
    padding_mask,
    segment_mask,
)

ATOL = 1e-5


def random_params(module, *args, seed: int, scale: float = 0.3, **kwargs):
    """Parameters of `module` for these inputs, every one (biases and norm scales included) random normal so none
    is trivially 0 or 1. Shapes come from `jax.eval_shape(module.init)`; values from NumPy (nothing to compile)."""
    shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args, **kwargs)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def np_params(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


# NumPy references ------------------------------------------------------------------------------------------------


def np_layernorm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * scale
    return y if bias is None else y + bias


def np_rmsnorm(x, scale, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


_erf = np.vectorize(math.erf)
NP_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}
GATE_OF = {"swiglu": "silu", "geglu": "gelu", "geglu_tanh": "gelu_tanh", "reglu": "relu"}


def np_feedforward(x, p, activation):
    def dense(name):
        y = x @ p[f"{name}_kernel"]
        return y + p[f"{name}_bias"] if f"{name}_bias" in p else y

    if activation in GATE_OF:
        hidden = NP_ACTIVATIONS[GATE_OF[activation]](dense("gate")) * dense("up")
    else:
        hidden = NP_ACTIVATIONS[activation](dense("up"))
    out = hidden @ p["down_kernel"]
    return out + p["down_bias"] if "down_bias" in p else out


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_mha(x, kv, p, mask):
    """x [B, T, D], kv [B, S, D]; kernels [D, N, H] and [N, H, D]; mask [B, 1, T, S] or None."""
    q = np.einsum("btd,dnh->btnh", x, p["query_kernel"]) + p["query_bias"]
    k = np.einsum("bsd,dnh->bsnh", kv, p["key_kernel"]) + p["key_bias"]
    v = np.einsum("bsd,dnh->bsnh", kv, p["value_kernel"]) + p["value_bias"]
    logits = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    out = np.einsum("bnts,bsnh->btnh", np_softmax(logits), v)
    return np.einsum("btnh,nhd->btd", out, p["out_kernel"]) + p["out_bias"]


# Norms -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
def test_layernorm_matches_numpy(use_bias):
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(3, 5, 36)).astype(np.float32)
    module = LayerNorm(eps=1e-5, use_bias=use_bias)
    params = random_params(module, x, seed=1)
    got = module.apply({"params": params}, x)
    p = np_params(params)
    want = np_layernorm(x.astype(np.float64), p["scale"], p.get("bias"), 1e-5)
    np.testing.assert_allclose(np.asarray(got), want, atol=ATOL, rtol=1e-5)


def test_rmsnorm_matches_numpy():
    x = np.random.default_rng(0).normal(0.5, 2.0, size=(2, 7, 36)).astype(np.float32)
    module = RMSNorm(eps=1e-6)
    params = random_params(module, x, seed=2)
    assert set(params) == {"scale"}
    got = module.apply({"params": params}, x)
    want = np_rmsnorm(x.astype(np.float64), np.asarray(params["scale"], np.float64), 1e-6)
    np.testing.assert_allclose(np.asarray(got), want, atol=ATOL, rtol=1e-5)


# Feed-forward ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu", "geglu_tanh", "reglu"])
def test_feedforward_matches_numpy(activation):
    x = np.random.default_rng(3).normal(size=(2, 7, 36)).astype(np.float32)
    module = FeedForward(d_model=36, d_ff=37, activation=activation, use_bias=True)
    params = random_params(module, x, seed=4)
    gated = activation in GATE_OF
    assert ("gate_kernel" in params) == gated
    got = module.apply({"params": params}, x)
    want = np_feedforward(x.astype(np.float64), np_params(params), activation)
    np.testing.assert_allclose(np.asarray(got), want, atol=ATOL, rtol=1e-5)


def test_gelu_variants_differ():
    # exact erf GELU and the tanh approximation must be distinct functions (a swapped table would pass above otherwise)
    x = np.linspace(-3, 3, 13)
    assert np.abs(NP_ACTIVATIONS["gelu"](x) - NP_ACTIVATIONS["gelu_tanh"](x)).max() > 1e-4


def test_feedforward_without_bias_has_no_bias_params():
    module = FeedForward(d_model=36, d_ff=37, activation="swiglu", use_bias=False)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 3, 36)))["params"]
    assert sorted(params) == ["down_kernel", "gate_kernel", "up_kernel"]


# Masks -------------------------------------------------------------------------------------------------------------


def test_causal_mask_with_and_without_offset():
    got = np.asarray(causal_mask(4))
    assert got.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(got[0, 0], [[j <= i for j in range(4)] for i in range(4)])
    # 2 new queries against 5 keys: the queries are the last two positions
    got = np.asarray(causal_mask(2, 5))[0, 0]
    np.testing.assert_array_equal(got, [[j <= i + 3 for j in range(5)] for i in range(2)])


def test_padding_and_key_padding_masks():
    q_valid = np.array([[1, 1, 0], [1, 0, 0]], bool)
    k_valid = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool)
    got = np.asarray(padding_mask(jnp.asarray(q_valid), jnp.asarray(k_valid)))
    assert got.shape == (2, 1, 3, 4)
    for b in range(2):
        for t in range(3):
            for s in range(4):
                assert got[b, 0, t, s] == (q_valid[b, t] and k_valid[b, s])
    got = np.asarray(key_padding_mask(jnp.asarray(k_valid), 3))
    assert got.shape == (2, 1, 3, 4)
    np.testing.assert_array_equal(got, np.broadcast_to(k_valid[:, None, None, :], (2, 1, 3, 4)))


def test_segment_mask_and_combine():
    segments = np.array([[1, 1, 2, 2, 2, 0], [1, 2, 3, 3, 0, 0]])
    got = np.asarray(segment_mask(jnp.asarray(segments), jnp.asarray(segments)))
    for b in range(2):
        for t in range(6):
            for s in range(6):
                assert got[b, 0, t, s] == (segments[b, t] == segments[b, s] and segments[b, t] > 0)
    both = np.asarray(combine(causal_mask(6), jnp.asarray(got)))
    np.testing.assert_array_equal(both, got & np.tril(np.ones((6, 6), bool))[None, None])
    assert combine(None, None) is None


# One block ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("cross", [False, True])
def test_transformer_block_matches_numpy(norm_position, cross):
    """Residual wiring: pre-norm x + f(norm(x)); post-norm norm(x + f(x)), for self-attn, cross-attn and MLP."""
    cfg = ModelConfig(
        d_model=36, num_heads=4, d_ff=37, activation="gelu", norm="layernorm", norm_position=norm_position
    )
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 7, 36)).astype(np.float32)
    encoded = rng.normal(size=(2, 5, 36)).astype(np.float32) if cross else None
    self_mask = np.asarray(causal_mask(7))
    cross_mask = np.ones((2, 1, 7, 5), bool)
    cross_mask[1, ..., 3:] = False  # second source row has 2 padded keys
    block = TransformerBlock(cfg, has_cross_attention=cross)
    kwargs = dict(mask=self_mask, encoded=encoded, cross_mask=cross_mask if cross else None)
    params = random_params(block, x, seed=6, scale=0.2, **kwargs)
    got = block.apply({"params": params}, x, **kwargs)

    p = np_params(params)
    h = x.astype(np.float64)

    def sublayer(h, name, fn):
        norm = lambda z: np_layernorm(z, p[f"{name}_norm"]["scale"], p[f"{name}_norm"]["bias"], cfg.norm_eps)  # noqa: E731
        return h + fn(norm(h)) if norm_position == "pre" else norm(h + fn(h))

    h = sublayer(h, "self_attention", lambda z: np_mha(z, z, p["self_attention"], self_mask))
    if cross:
        h = sublayer(
            h, "cross_attention", lambda z: np_mha(z, encoded.astype(np.float64), p["cross_attention"], cross_mask)
        )
    h = sublayer(h, "mlp", lambda z: np_feedforward(z, p["mlp"], "gelu"))
    np.testing.assert_allclose(np.asarray(got), h, atol=ATOL, rtol=1e-5)
