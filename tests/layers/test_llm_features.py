"""Issue-19 layer features against independent references: RoPE scaling rules (NumPy formula and
transformers' modeling_rope_utils), partial rotary, qk-norm, q/k/v-only biases, sliding window."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import decoding, models
from jaxformer.config import ModelConfig
from jaxformer.layers.rope import Rope, apply_rope

TINY = ModelConfig(
    family="decoder_only",
    vocab_size=53,
    d_model=30,
    num_heads=6,
    num_kv_heads=2,
    head_dim=8,
    d_ff=37,
    num_layers=3,
    max_len=64,
    activation="swiglu",
    norm="rmsnorm",
    position="rotary",
    use_bias=False,
    tie_embeddings=False,
)


def test_llama3_frequencies_equal_the_formula():
    """Llama 3.1: wavelength > L0/low -> f/factor; < L0/high -> f; else (1-s) f/factor + s f, s = (L0/wl - low)/(high-low)."""
    rope = Rope(rotary_dim=64, base=500000.0, scaling="llama3", factor=8.0, original_max_len=8192)
    got, scale = rope.inv_freq()
    inv = 1.0 / 500000.0 ** (np.arange(0, 64, 2) / 64.0)
    want = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < 8192 / 4.0:
            want.append(f)
        elif wavelen > 8192 / 1.0:
            want.append(f / 8.0)
        else:
            s = (8192 / wavelen - 1.0) / (4.0 - 1.0)
            want.append((1 - s) * f / 8.0 + s * f)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-6)
    assert scale == 1.0
    assert got[0] == pytest.approx(inv[0]) and got[-1] == pytest.approx(inv[-1] / 8.0)  # both regimes present


@pytest.mark.parametrize(
    "rope_type, params",
    [
        ("linear", dict(factor=3.0)),
        ("llama3", dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)),
        ("yarn", dict(factor=4.0, original_max_position_embeddings=16)),
        ("yarn", dict(factor=2.5, beta_fast=16.0, beta_slow=2.0, original_max_position_embeddings=24, truncate=False)),
        ("dynamic", dict(factor=2.0)),
    ],
)
def test_rope_rules_match_transformers(rope_type, params):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = LlamaConfig(
        hidden_size=48,
        num_attention_heads=4,
        head_dim=12,
        max_position_embeddings=32,
        rope_parameters=dict(rope_type=rope_type, rope_theta=1000.0, **params),
    )
    seq_len = 50  # beyond max_position_embeddings: dynamic NTK grows its base
    want, want_scale = ROPE_INIT_FUNCTIONS[rope_type](hf, torch.device("cpu"), seq_len=seq_len)
    rope = Rope(
        rotary_dim=12,
        base=1000.0,
        scaling=rope_type,
        factor=params["factor"],
        original_max_len=params.get("original_max_position_embeddings", 32),
        low_freq_factor=params.get("low_freq_factor", 1.0),
        high_freq_factor=params.get("high_freq_factor", 4.0),
        beta_fast=params.get("beta_fast", 32.0),
        beta_slow=params.get("beta_slow", 1.0),
        truncate=params.get("truncate", True),
    )
    got, scale = rope.frequencies(jnp.arange(seq_len)[None])
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-6)
    assert scale == pytest.approx(want_scale)


def test_partial_rotary_leaves_the_tail_unrotated_and_rotates_the_head_as_full_rope():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 10))
    positions = jnp.broadcast_to(jnp.arange(5) + 3, (2, 5))
    out = apply_rope(x, positions, Rope(rotary_dim=4, base=100.0))
    np.testing.assert_array_equal(np.asarray(out[..., 4:]), np.asarray(x[..., 4:]))
    full = apply_rope(x[..., :4], positions, Rope(rotary_dim=4, base=100.0))
    np.testing.assert_allclose(np.asarray(out[..., :4]), np.asarray(full), atol=1e-6)
    angle = 3.0 * 1.0  # position 3, first frequency base^0
    x0, x2 = np.asarray(x[0, 0, 0, 0]), np.asarray(x[0, 0, 0, 2])
    assert float(out[0, 0, 0, 0]) == pytest.approx(x0 * math.cos(angle) - x2 * math.sin(angle), abs=1e-5)


def logits(config, params, tokens, **kwargs):
    return np.asarray(models.build(config).apply({"params": params}, jnp.asarray(tokens), **kwargs))


@pytest.mark.slow  # ~12 s; Qwen3 (qk_norm) logits match transformers by default (tests/hf)
def test_qk_norm_normalises_each_head_before_rope():
    """qk_norm: q/k scaled to unit RMS per head (scale [H]), so scaling a head's projection changes nothing."""
    config = TINY.replace(qk_norm=True, norm_eps=1e-12)
    params = models.init_params(config, jax.random.PRNGKey(1))
    attn = params["decoder"]["layers_0"]["self_attention"]
    assert attn["query_norm_scale"].shape == (8,) and attn["key_norm_scale"].shape == (8,)
    tokens = np.array([[3, 9, 27, 4, 50, 11]], np.int32)
    base = logits(config, params, tokens)
    scaled = jax.tree.map(lambda x: x, params)
    layer = scaled["decoder"]["layers_0"]["self_attention"]
    layer["query_kernel"] = layer["query_kernel"] * 7.0  # RMSNorm removes any per-head scale of q and k
    layer["key_kernel"] = layer["key_kernel"] * 0.3
    np.testing.assert_allclose(logits(config, scaled, tokens), base, atol=2e-5)
    without = logits(TINY, params_without_norm(params), tokens)
    assert np.max(np.abs(without - base)) > 1e-3  # the norm does change the model


def params_without_norm(params):
    out = jax.tree.map(lambda x: x, params)
    for name in ("layers_0", "layers_1", "layers_2"):
        for key in ("query_norm_scale", "key_norm_scale"):
            del out["decoder"][name]["self_attention"][key]
    return out


def test_qkv_bias_adds_biases_to_query_key_value_only():
    params = models.init_params(TINY.replace(qkv_bias=True), jax.random.PRNGKey(2))
    attn = params["decoder"]["layers_0"]["self_attention"]
    assert (
        attn["query_bias"].shape == (6, 8) and attn["key_bias"].shape == (2, 8) and attn["value_bias"].shape == (2, 8)
    )
    assert "out_bias" not in attn and "up_bias" not in params["decoder"]["layers_0"]["mlp"]


@pytest.mark.parametrize("scan", [False, True])
def test_sliding_window_hides_tokens_more_than_window_back(scan):
    window = 3
    config = TINY.replace(sliding_window=window, num_layers=1, scan_layers=scan)
    params = models.init_params(config, jax.random.PRNGKey(3))
    tokens = np.array([[5, 8, 13, 21, 34, 2, 7, 19, 44]], np.int32)
    changed = tokens.copy()
    changed[0, 2] = 40  # more than `window` slots before the last query (slot 8)
    a, b = logits(config, params, tokens), logits(config, params, changed)
    np.testing.assert_allclose(
        a[0, 2 + window :], b[0, 2 + window :], atol=1e-6
    )  # one layer: only slots < 2 + window see it
    assert np.max(np.abs(a[0, 2:5] - b[0, 2:5])) > 1e-4  # inside the window it matters
    global_ = TINY.replace(num_layers=1, scan_layers=scan)
    assert np.max(np.abs(logits(global_, params, tokens)[0, -1] - logits(global_, params, changed)[0, -1])) > 1e-4


@pytest.mark.slow  # ~15 s; the window masks are checked by default below
def test_sliding_window_with_packed_segments_equals_separate_rows():
    config = TINY.replace(sliding_window=2)
    params = models.init_params(config, jax.random.PRNGKey(4))
    first, second = [4, 9, 16, 25, 36], [7, 14, 21, 28]
    packed = np.array([first + second], np.int32)
    segments = np.array([[1] * 5 + [2] * 4], np.int32)
    positions = np.array([list(range(5)) + list(range(4))], np.int32)
    got = logits(config, params, packed, positions=positions, segment_ids=segments)
    np.testing.assert_allclose(got[0, :5], logits(config, params, np.array([first]))[0], atol=2e-5)
    np.testing.assert_allclose(got[0, 5:], logits(config, params, np.array([second]))[0], atol=2e-5)


@pytest.mark.slow  # ~1 minute per case on 2 cores; tests/hf/test_hf_llama_family.py checks cached greedy decoding with windows by default
@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_decode_with_per_layer_windows_equals_full_forward(scan):
    """Layers 0 and 2 slide (window 3), layer 1 is global; prompts longer than the window, left-padded."""
    config = TINY.replace(sliding_window=3, sliding_window_layers=(0, 2), scan_layers=scan, qk_norm=True, qkv_bias=True)
    assert config.layer_windows() == (3, 0, 3)
    params = models.init_params(config, jax.random.PRNGKey(5))
    prompts = [[3, 17, 29, 40, 8, 12, 5], [22, 9, 31, 2]]
    steps = 6
    new = decoding.generate(config, params, prompts, max_new_tokens=steps)
    for row, prompt in enumerate(prompts):
        sequence = list(prompt)
        for _ in range(steps):  # greedy by full forward passes over the growing sequence
            sequence.append(int(np.argmax(logits(config, params, np.array([sequence]))[0, -1])))
        assert new[row].tolist() == sequence[len(prompt) :]


def test_sliding_window_scan_compiles_one_layer_body():
    """Windows are scanned data: the jaxpr of a 2-layer and an 8-layer scanned model has the same size."""
    sizes = []
    for layers in (2, 8):
        config = TINY.replace(num_layers=layers, scan_layers=True, sliding_window=3, sliding_window_layers=(0,))
        params = models.abstract_params(config)
        model = models.build(config)
        jaxpr = jax.make_jaxpr(lambda p, t, m=model: m.apply({"params": p}, t))(
            nn_unbox(params), jnp.zeros((1, 5), jnp.int32)
        )
        sizes.append(len(str(jaxpr).splitlines()))
    assert sizes[0] == sizes[1]


def nn_unbox(tree):
    import flax.linen as nn

    return nn.meta.unbox(tree)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(rope_scaling="yarnn"), "Did you mean 'yarn'"),
        (dict(rope_scaling="llama3", position="learned"), "needs position='rotary'"),
        (dict(rope_scaling="linear", rope_factor=0.5), "rope_factor"),
        (dict(rotary_fraction=0.1), "rotated dims"),
        (dict(qk_norm=True, norm="layernorm"), "qk_norm"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(sliding_window_layers=(0,)), "sliding_window is None"),
        (dict(sliding_window=4, sliding_window_layers=(3,)), r"\[0, 3\)"),
    ],
)
def test_bad_llm_fields_fail_with_one_line(changes, message):
    with pytest.raises(ValueError, match=message):
        TINY.replace(**changes)
