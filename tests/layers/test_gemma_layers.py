"""Gemma layer features against independent NumPy references (each feature its own test):
(1 + w) RMSNorm, sqrt(D) embedding scale rounded to the embedding dtype, attention- and final-logit
soft-capping (c * tanh(x / c)), query_pre_attn_scalar, sandwich norms, GeGLU (tanh), Gemma 3's local
RoPE base per layer (scanned as data, compile size flat in depth), and each field's validation error."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxformer import models, presets
from jaxformer.config import ModelConfig
from jaxformer.layers.attention import MultiHeadAttention, dot_product_attention, reference_attention
from jaxformer.layers.block import TransformerBlock
from jaxformer.layers.feedforward import FeedForward
from jaxformer.layers.norms import RMSNorm
from jaxformer.layers.rope import Rope, layer_frequencies
from jaxformer.models.embeddings import default_positions

RNG = np.random.RandomState(0)


def np_rmsnorm(x, w, eps, offset):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * (offset + w)


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def np_attention(q, k, v, scale, cap=None, mask=None):
    """q [B, T, N, H], k/v [B, S, K, H] (K divides N) -> [B, T, N, H]: softmax(cap tanh(s QK / cap)) V."""
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if cap is not None:
        logits = cap * np.tanh(logits / cap)
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    return np.einsum("bnts,bsnh->btnh", np_softmax(logits), v)


def forward(config, params, tokens):
    """Logits [B, T, V] of `config`'s model, jitted (one compile instead of op-by-op dispatch)."""
    module = models.build(config)
    return jax.jit(lambda p, t: module.apply({"params": p}, t))(params, tokens)


def test_rmsnorm_scale_offset_is_gemmas_one_plus_w():
    x = RNG.randn(2, 5, 11).astype(np.float32)
    norm = RMSNorm(eps=1e-6, scale_offset=1.0)
    params = nn.meta.unbox(norm.init(jax.random.PRNGKey(0), x))
    assert np.all(np.asarray(params["params"]["scale"]) == 0.0)  # w starts at 0: y starts as the plain norm
    np.testing.assert_allclose(norm.apply(params, x), np_rmsnorm(x, 0.0, 1e-6, 1.0), rtol=1e-5, atol=1e-6)
    w = RNG.randn(11).astype(np.float32)
    got = norm.apply({"params": {"scale": w}}, x)
    np.testing.assert_allclose(got, np_rmsnorm(x, w, 1e-6, 1.0), rtol=1e-5, atol=1e-6)
    plain = RMSNorm(eps=1e-6).apply({"params": {"scale": w}}, x)  # offset 0: x_hat * w, as before
    np.testing.assert_allclose(plain, np_rmsnorm(x, w, 1e-6, 0.0), rtol=1e-5, atol=1e-6)


def test_embedding_scale_is_sqrt_d_rounded_to_the_embedding_dtype():
    """transformers (Gemma): embeddings * tensor(sqrt(D)).to(dtype); in bf16 sqrt(30) is 5.46875, not 5.477."""
    config = presets.get("tiny-gemma", d_model=30, dtype="bfloat16", param_dtype="bfloat16")
    tokens = jnp.asarray(RNG.randint(0, config.vocab_size, (2, 7)), jnp.int32)
    module = models.build(config)
    params = models.init_params(config, jax.random.PRNGKey(1))
    got = module.apply({"params": params}, tokens, method=lambda m, t: m.embedding(t, default_positions(t)))
    table = np.asarray(params["embed"]["embedding"])  # bfloat16 [V, D]
    scale = np.asarray(math.sqrt(30), ml_dtypes.bfloat16)
    want = table[np.asarray(tokens)] * scale  # bf16 * bf16, rounded to bf16
    assert float(scale) == 5.46875
    np.testing.assert_array_equal(np.asarray(got).view(np.uint16), want.view(np.uint16))


def test_attention_logit_softcap_is_c_tanh_x_over_c():
    q = RNG.randn(2, 6, 4, 8).astype(np.float32) * 3
    k = RNG.randn(2, 6, 2, 8).astype(np.float32) * 3
    v = RNG.randn(2, 6, 2, 8).astype(np.float32)
    causal = np.tril(np.ones((6, 6), bool))[None, None]
    want = np_attention(q, k, v, 8**-0.5, cap=2.0, mask=causal)
    out, _ = reference_attention(q, k, v, mask=jnp.asarray(causal), logit_softcap=2.0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    fast = dot_product_attention(q, k, v, mask=jnp.asarray(causal), implementation="xla", logit_softcap=2.0)
    np.testing.assert_allclose(fast, want, rtol=1e-5, atol=1e-5)  # the fused kernels have no cap: reference used
    uncapped = np_attention(q, k, v, 8**-0.5, mask=causal)
    assert np.abs(uncapped - want).max() > 1e-2  # the cap bites at these logits


def test_final_logit_softcap_is_c_tanh_x_over_c():
    config = presets.get("tiny-gemma", final_logit_softcap=0.3)
    tokens = jnp.asarray(RNG.randint(0, config.vocab_size, (2, 7)), jnp.int32)
    params = models.init_params(config, jax.random.PRNGKey(2))
    capped = np.asarray(forward(config, params, tokens), np.float64)
    raw = np.asarray(forward(config.replace(final_logit_softcap=None), params, tokens))
    np.testing.assert_allclose(capped, 0.3 * np.tanh(raw.astype(np.float64) / 0.3), rtol=1e-5, atol=1e-6)
    assert np.abs(raw).max() > 0.3  # some logits beyond the cap, so tanh's bend is tested


def attention_params(num_heads, kv_heads, d_model, head_dim, seed):
    rng = np.random.RandomState(seed)
    return {
        "query_kernel": rng.randn(d_model, num_heads, head_dim).astype(np.float32) * 0.3,
        "key_kernel": rng.randn(d_model, kv_heads, head_dim).astype(np.float32) * 0.3,
        "value_kernel": rng.randn(d_model, kv_heads, head_dim).astype(np.float32) * 0.3,
        "out_kernel": rng.randn(num_heads, head_dim, d_model).astype(np.float32) * 0.3,
    }


@pytest.mark.slow  # ~12 s; Gemma 2 logits match transformers by default (tests/hf)
def test_query_pre_attn_scalar_scales_queries_by_its_inverse_root():
    x = RNG.randn(2, 5, 12).astype(np.float32)
    p = attention_params(4, 2, 12, 6, seed=3)
    layer = MultiHeadAttention(num_heads=4, head_dim=6, num_kv_heads=2, use_bias=False, query_scale=20.0**-0.5)
    got = layer.apply({"params": p}, x)
    q, k, v = (np.einsum("btd,dnh->btnh", x, p[f"{n}_kernel"]) for n in ("query", "key", "value"))
    want = np.einsum("btnh,nhd->btd", np_attention(q, k, v, 20.0**-0.5), p["out_kernel"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    config = presets.get("tiny-gemma2")  # the config field reaches the model: s = head_dim is the default scale
    tokens = jnp.asarray(RNG.randint(0, config.vocab_size, (2, 7)), jnp.int32)
    params = models.init_params(config, jax.random.PRNGKey(3))

    def logits(scalar):
        return np.asarray(forward(config.replace(query_pre_attn_scalar=scalar), params, tokens))

    np.testing.assert_allclose(logits(float(config.dim_per_head)), logits(None), rtol=1e-6, atol=1e-6)
    assert np.abs(logits(0.01) - logits(None)).max() > 1e-4


def test_sandwich_norms_wrap_each_sublayer_output():
    """Gemma 2/3 block: h = x + post_norm(attn(norm(x))); out = h + post_norm'(mlp(norm'(h))), norms (1 + w)."""
    config = presets.get("tiny-gemma2", sliding_window=None, sliding_window_layers=None)
    x = RNG.randn(2, 6, config.d_model).astype(np.float32)
    block = TransformerBlock(config)
    params = nn.meta.unbox(block.init(jax.random.PRNGKey(4), x)["params"])
    params = jax.tree.map(lambda a: a + 0.3 * RNG.randn(*a.shape).astype(np.float32), params)
    assert sorted(params) == ["mlp", "mlp_norm", "mlp_post_norm", "self_attention", "self_attention_norm",
                              "self_attention_post_norm"]  # fmt: skip
    got = block.apply({"params": params}, x, mask=jnp.tril(jnp.ones((6, 6), bool))[None, None])

    def norm(name, h):
        return np_rmsnorm(h, np.asarray(params[name]["scale"]), config.norm_eps, 1.0)

    attn = MultiHeadAttention(
        num_heads=config.num_heads,
        head_dim=config.dim_per_head,
        num_kv_heads=config.kv_heads,
        use_bias=False,
        rotary=True,
        rope=Rope.from_config(config),
        query_scale=config.query_pre_attn_scalar**-0.5,
        logit_softcap=config.attn_logit_softcap,
    )
    ffn = FeedForward(d_model=config.d_model, d_ff=config.d_ff, activation="geglu_tanh", use_bias=False)
    causal = jnp.tril(jnp.ones((6, 6), bool))[None, None]
    a = np.asarray(attn.apply({"params": params["self_attention"]}, norm("self_attention_norm", x), mask=causal))
    h = x + norm("self_attention_post_norm", a)
    m = np.asarray(ffn.apply({"params": params["mlp"]}, norm("mlp_norm", h).astype(np.float32)))
    want = h + norm("mlp_post_norm", m)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_geglu_tanh_feed_forward_is_gelu_tanh_gate_times_up():
    x = RNG.randn(2, 3, 9).astype(np.float32)
    ffn = FeedForward(d_model=9, d_ff=13, activation="geglu_tanh", use_bias=False)
    p = nn.meta.unbox(ffn.init(jax.random.PRNGKey(5), x)["params"])
    want = (np_gelu_tanh(x @ np.asarray(p["gate_kernel"])) * (x @ np.asarray(p["up_kernel"]))) @ np.asarray(
        p["down_kernel"]
    )
    np.testing.assert_allclose(ffn.apply({"params": p}, x), want, rtol=1e-5, atol=1e-6)


def test_local_rope_base_per_layer_is_data():
    """Gemma 3: local (sliding) layers rotate at rope_local_base, global ones by the global rule; the flag
    may be traced, so one compiled layer serves both."""
    global_rope, local_rope = Rope(rotary_dim=8, base=1e6, scaling="linear", factor=2.0), Rope(rotary_dim=8, base=1e4)
    positions = jnp.arange(5)[None]
    freqs = jax.jit(lambda flag: layer_frequencies(positions, global_rope, local_rope, flag)[0])
    exponents = np.arange(0, 8, 2) / 8.0
    np.testing.assert_allclose(freqs(jnp.asarray(True)), 1e4**-exponents, rtol=1e-6)
    np.testing.assert_allclose(freqs(jnp.asarray(False)), 1e6**-exponents / 2.0, rtol=1e-6)


def tiny_gemma3(**overrides):
    return presets.get("tiny-gemma3", **overrides)


@pytest.mark.slow  # ~11 s; Gemma 3 logits match transformers by default (tests/hf)
def test_local_rope_base_changes_only_the_local_layers():
    config = tiny_gemma3(num_layers=6, sliding_window_layers=(0, 1, 2, 3, 4), scan_layers=True)  # layer 5 global
    tokens = jnp.asarray(RNG.randint(0, config.vocab_size, (2, 12)), jnp.int32)
    params = models.init_params(config, jax.random.PRNGKey(6))

    def logits(**changes):
        return np.asarray(forward(config.replace(**changes), params, tokens))

    same_base = logits(rope_local_base=config.rotary_base)  # == one base everywhere
    np.testing.assert_allclose(same_base, logits(rope_local_base=None, sliding_window=5), rtol=1e-6, atol=1e-6)
    assert np.abs(logits() - same_base).max() > 1e-3  # the local base matters
    all_global = dict(sliding_window_layers=(), rope_local_base=1.5)  # no local layer: the local base is unused
    np.testing.assert_allclose(logits(**all_global), logits(sliding_window_layers=()), rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # ~15 s; Gemma 3 scanned logits match transformers by default (tests/hf)
def test_gemma3_scanned_equals_unrolled_and_compiles_flat_in_depth():
    config = tiny_gemma3()
    tokens = jnp.asarray(RNG.randint(0, config.vocab_size, (2, 12)), jnp.int32)
    params = models.init_params(config, jax.random.PRNGKey(7))
    scanned = config.replace(scan_layers=True)
    stacked = {**params, "decoder": models.stack_layer_params(params["decoder"], config.num_layers)}
    np.testing.assert_allclose(forward(scanned, stacked, tokens), forward(config, params, tokens), rtol=1e-5, atol=1e-5)

    def program_size(layers):
        cfg = scanned.replace(num_layers=layers, sliding_window_layers=tuple(i for i in range(layers) if (i + 1) % 6))
        module = models.build(cfg)
        shapes = nn.meta.unbox(models.abstract_params(cfg))
        return len(jax.jit(lambda p: module.apply({"params": p}, tokens)).lower(shapes).as_text())

    small, deep = program_size(6), program_size(24)
    assert deep < 1.1 * small, (small, deep)  # per-layer windows and RoPE bases are scanned data


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(norm="layernorm", norm_scale_offset=1.0), "norm_scale_offset=1.0 applies to RMSNorm"),
        (dict(query_pre_attn_scalar=0.0), "query_pre_attn_scalar=0.0 must be a positive number"),
        (dict(attn_logit_softcap=-1.0), "attn_logit_softcap=-1.0 must be a positive number"),
        (dict(final_logit_softcap="30"), "final_logit_softcap='30' must be a positive number"),
        (dict(scale_attention_logits=False, query_pre_attn_scalar=16.0), "scale_attention_logits=False"),
        (dict(norm_position="post", sandwich_norms=True), "sandwich_norms=True .* needs norm_position='pre'"),
        (dict(position="learned", rope_local_base=1e4), "rope_local_base needs position='rotary'"),
        (dict(rope_local_base=1e4), "sliding_window\n?.*is None"),
    ],
)
def test_each_gemma_field_has_a_clear_validation_error(changes, message):
    base = ModelConfig(family="decoder_only", norm="rmsnorm", position="rotary", use_bias=False)
    with pytest.raises(ValueError, match=message):
        base.replace(**changes)
