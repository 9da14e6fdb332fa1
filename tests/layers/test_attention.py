"""Reference tests for attention: kernels and MultiHeadAttention against NumPy softmax(Q K^T / sqrt(H)) V, and GQA."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxformer.layers import MultiHeadAttention, dot_product_attention, reference_attention

ATOL = 1e-5
B, T, S, N, H, D = 2, 7, 5, 4, 9, 36


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_attention(q, k, v, bias=None, mask=None, scale=None):
    """q [B, T, N, H], k/v [B, S, K, H] (query head n uses kv head n // (N/K)); returns [B, T, N, H]."""
    groups = q.shape[2] // k.shape[2]
    k = np.repeat(k, groups, axis=2)
    v = np.repeat(v, groups, axis=2)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    return np.einsum("bnts,bsnh->btnh", np_softmax(logits), v)


def random_qkv(kv_heads: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, T, N, H)).astype(np.float32)
    k = rng.normal(size=(B, S, kv_heads, H)).astype(np.float32)
    v = rng.normal(size=(B, S, kv_heads, H)).astype(np.float32)
    return q, k, v


def random_mask(seed: int = 1):
    mask = np.random.default_rng(seed).random((B, 1, T, S)) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    return mask


@pytest.mark.parametrize("implementation", ["reference", "xla"])
@pytest.mark.parametrize("kv_heads", [N, 2, 1])
def test_dot_product_attention_matches_numpy(implementation, kv_heads):
    q, k, v = random_qkv(kv_heads)
    mask = random_mask()
    bias = np.random.default_rng(2).normal(size=(1, N, T, S)).astype(np.float32)
    for kwargs in ({}, {"mask": mask}, {"mask": mask, "bias": bias}, {"scale": 0.3, "bias": bias}):
        got = dot_product_attention(q, k, v, implementation=implementation, **kwargs)
        want = np_attention(q.astype(np.float64), k, v, **kwargs)
        np.testing.assert_allclose(np.asarray(got), want, atol=ATOL, rtol=1e-5, err_msg=str(list(kwargs)))


def test_reference_attention_returns_normalised_masked_probabilities():
    q, k, v = random_qkv(2)
    mask = random_mask()
    _, probs = reference_attention(q, k, v, mask=mask)
    probs = np.asarray(probs)
    assert probs.shape == (B, N, T, S)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert np.all(probs[np.broadcast_to(~mask, probs.shape)] == 0.0)


_JITTED: dict[int, object] = {}


def jit_apply(module, params, *args, **kwargs):
    """module.apply under jit, one compiled function per module object (fewer compiles than eager op-by-op)."""
    if id(module) not in _JITTED:
        _JITTED[id(module)] = (module, jax.jit(lambda p, a, k: module.apply({"params": p}, *a, **k)))
    return _JITTED[id(module)][1](params, args, kwargs)


def mha_params(num_kv_heads: int | None, seed: int = 3, use_bias: bool = True, head_dim: int = H, rotary=False):
    """(module, random params [std 0.2]) for N=4 query heads of size `head_dim` on D=36 inputs."""
    module = MultiHeadAttention(N, head_dim, num_kv_heads=num_kv_heads, use_bias=use_bias, rotary=rotary)
    x = np.zeros((B, T, D), np.float32)
    shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"])  # shapes only
    rng = np.random.default_rng(seed)
    return module, jax.tree.map(lambda s: (0.2 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def np_multi_head_attention(x, kv, p, mask, groups=1):
    """Projections in NumPy: Q = x Wq + bq, K = kv Wk + bk, V = kv Wv + bv; out = concat_heads(attn) Wo + bo."""
    p = {name: np.asarray(value, np.float64) for name, value in p.items()}
    q = np.einsum("btd,dnh->btnh", x, p["query_kernel"]) + p["query_bias"]
    k = np.einsum("bsd,dkh->bskh", kv, p["key_kernel"]) + p["key_bias"]
    v = np.einsum("bsd,dkh->bskh", kv, p["value_kernel"]) + p["value_bias"]
    heads = np_attention(q, k, v, mask=mask)  # [B, T, N, H]
    concat = heads.reshape(x.shape[0], x.shape[1], -1)  # [B, T, N*H]
    return concat @ p["out_kernel"].reshape(-1, x.shape[-1]) + p["out_bias"]


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_multi_head_self_and_cross_attention_match_numpy(implementation):
    module, params = mha_params(None)
    module = module.clone(implementation=implementation)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    memory = rng.normal(size=(B, S, D)).astype(np.float32)
    self_mask = np.tril(np.ones((T, T), bool))[None, None]
    got_self = jit_apply(module, params, x, mask=self_mask)
    np.testing.assert_allclose(np.asarray(got_self), np_multi_head_attention(x, x, params, self_mask), atol=ATOL)
    cross_mask = random_mask()
    got_cross = jit_apply(module, params, x, kv_inputs=memory, mask=cross_mask)
    np.testing.assert_allclose(np.asarray(got_cross), np_multi_head_attention(x, memory, params, cross_mask), atol=ATOL)


def test_gqa_with_all_kv_heads_equals_mha():
    _, params = mha_params(None)
    x = np.random.default_rng(5).normal(size=(B, T, D)).astype(np.float32)
    mha = MultiHeadAttention(num_heads=N, head_dim=H)
    gqa = MultiHeadAttention(num_heads=N, head_dim=H, num_kv_heads=N)
    np.testing.assert_allclose(np.asarray(jit_apply(gqa, params, x)), np.asarray(jit_apply(mha, params, x)), atol=ATOL)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_gqa_equals_mha_with_repeated_kv_weights(kv_heads, implementation):
    """Query head n reads kv head n // (N / K): repeating each kv head's weights for its group gives plain MHA."""
    gqa, params = mha_params(kv_heads, seed=6)
    gqa = gqa.clone(implementation=implementation)
    assert params["key_kernel"].shape == (D, kv_heads, H)
    groups = N // kv_heads
    repeated = dict(params)
    for name in ("key_kernel", "value_kernel"):
        repeated[name] = np.repeat(np.asarray(params[name]), groups, axis=1)  # [D, K, H] -> [D, N, H]
    for name in ("key_bias", "value_bias"):
        repeated[name] = np.repeat(np.asarray(params[name]), groups, axis=0)  # [K, H] -> [N, H]
    mha = MultiHeadAttention(num_heads=N, head_dim=H)
    x = np.random.default_rng(7).normal(size=(B, T, D)).astype(np.float32)
    mask = np.tril(np.ones((T, T), bool))[None, None]
    got = jit_apply(gqa, params, x, mask=mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jit_apply(mha, repeated, x, mask=mask)), atol=ATOL)
    np.testing.assert_allclose(np.asarray(got), np_multi_head_attention(x, x, params, mask), atol=ATOL)


def test_rotary_attention_is_translation_invariant():
    """With rotary positions (and no other position signal) shifting all positions leaves self-attention unchanged."""
    module, params = mha_params(2, seed=10, use_bias=False, head_dim=10, rotary=True)
    x = np.random.default_rng(8).normal(size=(B, T, D)).astype(np.float32)
    positions = np.broadcast_to(np.arange(T), (B, T))
    base = jit_apply(module, params, x, positions=positions)
    shifted = jit_apply(module, params, x, positions=positions + 13)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(base), atol=1e-4)
    permuted = jit_apply(module, params, x, positions=positions[:, ::-1].copy())
    assert np.abs(np.asarray(permuted) - np.asarray(base)).max() > 1e-4  # positions do matter


def test_attention_weights_are_sown_as_intermediates():
    module, params = mha_params(2)
    x = np.random.default_rng(9).normal(size=(B, T, D)).astype(np.float32)
    out, state = module.apply({"params": params}, x, mutable=["intermediates"])
    (probs,) = state["intermediates"]["attention_weights"]
    assert probs.shape == (B, N, T, T)
    np.testing.assert_allclose(np.asarray(out), np.asarray(module.apply({"params": params}, x)), atol=ATOL)


@pytest.mark.parametrize("kv_heads", [N, 2, 1])
def test_cached_decoding_one_token_at_a_time_matches_numpy(kv_heads):
    """Decode mode: a prefill of 3 tokens, then one token per call (the single-step path that reads the cache
    before writing it), each with a relative-position-style bias and a padded slot, == NumPy causal attention."""
    module, params = mha_params(kv_heads, seed=11)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    bias = rng.normal(size=(1, N, T, T)).astype(np.float32)
    valid = np.ones((B, T), bool)
    valid[1, 1] = False  # row 1's second token is padding: no later query attends to it
    decoder = module.clone(implementation="xla")
    cache = decoder.init(jax.random.PRNGKey(0), x, decode=True)["cache"]
    prefill = 3

    def call(cache, start, stop):
        return decoder.apply(
            {"params": params, "cache": cache},
            x[:, start:stop],
            bias=bias[:, :, start:stop, :],
            kv_valid=valid[:, start:stop],
            decode=True,
            mutable=["cache"],
        )

    outputs = []
    out, variables = call(cache, 0, prefill)
    outputs.append(np.asarray(out))
    for t in range(prefill, T):
        out, variables = jax.jit(call, static_argnums=(1, 2))(variables["cache"], t, t + 1)
        outputs.append(np.asarray(out))
    got = np.concatenate(outputs, axis=1)  # [B, T, D]
    mask = np.tril(np.ones((T, T), bool))[None, None] & valid[:, None, None, :]
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    q = np.einsum("btd,dnh->btnh", x, p["query_kernel"]) + p["query_bias"]
    k = np.einsum("bsd,dkh->bskh", x, p["key_kernel"]) + p["key_bias"]
    v = np.einsum("bsd,dkh->bskh", x, p["value_kernel"]) + p["value_bias"]
    heads = np_attention(q, k, v, bias=bias, mask=mask)
    want = heads.reshape(B, T, -1) @ p["out_kernel"].reshape(-1, D) + p["out_bias"]
    np.testing.assert_allclose(got, want, atol=ATOL)
    assert int(variables["cache"]["cache_index"]) == T
