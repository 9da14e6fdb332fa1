"""int8 weight-only quantization: the math against NumPy, one dense product, a whole model, the bytes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.decoding_reference import model_and_params

from jaxformer import decoding, models, presets
from jaxformer.decoding.quantize import Int8Kernel, kernel_bytes, quantize, quantize_int8, quantize_params
from jaxformer.errors import InputError
from jaxformer.models.heads import Dense


def numpy_int8(w: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    absmax = np.abs(w).max(axis=axes, keepdims=True)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


@pytest.mark.parametrize(
    ("shape", "axes"), [((37, 11), (0,)), ((5, 3, 7), (0,)), ((3, 7, 13), (0, 1)), ((2, 9, 5), (1,))]
)
def test_int8_matches_numpy_absmax_rounding(shape, axes):
    w = np.random.default_rng(1).normal(0.0, 0.3, shape).astype(np.float32)
    w[(0,) * len(shape)] = 0.0
    k = quantize_int8(w, axes)
    q, s = numpy_int8(w, axes)
    assert k.values.dtype == jnp.int8 and k.scale.shape == s.shape
    np.testing.assert_array_equal(np.asarray(k.values), q)
    np.testing.assert_allclose(np.asarray(k.scale), s, rtol=1e-7)
    assert np.abs(np.asarray(k.values)).max() == 127  # each channel's absmax maps to +-127
    err = np.abs(np.asarray(k.astype(jnp.float32)) - w)
    assert np.all(err <= s / 2 + 1e-7)


def test_zero_channel_keeps_scale_one_and_clipping_holds():
    w = np.zeros((4, 3), np.float32)
    w[:, 1] = [0.25, -2.0, 0.5, 2.0]
    k = quantize_int8(w, (0,))
    np.testing.assert_allclose(np.asarray(k.scale)[0], [1.0, 2.0 / 127, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(k.values)[:, 1], [16, -127, 32, 127])  # 15.875 -> 16, 31.75 -> 32
    np.testing.assert_array_equal(np.asarray(k.values)[:, [0, 2]], 0)


def test_quantized_dense_equals_numpy_x_times_q_s():
    x = np.random.default_rng(2).normal(size=(3, 5, 19)).astype(np.float32)
    w = np.random.default_rng(3).normal(0.0, 0.2, (19, 23)).astype(np.float32)
    b = np.random.default_rng(4).normal(size=(23,)).astype(np.float32)
    k = quantize_int8(w, (0,))
    y = Dense(23, ("embed", "mlp")).apply({"params": {"kernel": k, "bias": b}}, x)
    q, s = numpy_int8(w, (0,))
    np.testing.assert_allclose(np.asarray(y), x @ (q.astype(np.float32) * s) + b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "scan"), [("tiny-gpt2", False), pytest.param("tiny-llama", True, marks=pytest.mark.slow)]
)
def test_quantized_model_logits_close_and_greedy_runs(name, scan):
    config, params = model_and_params(name, scan_layers=scan)
    config, params = config, jax.tree.map(lambda x: x * 0.5, params)  # moderate logits
    qparams = quantize_params(config, params)
    leaves = jax.tree.leaves(qparams, is_leaf=lambda x: isinstance(x, Int8Kernel))
    assert sum(isinstance(x, Int8Kernel) for x in leaves) >= 4
    tokens = jnp.asarray(np.random.default_rng(5).integers(1, config.vocab_size, (2, 9)), jnp.int32)
    model = models.build(config)
    ref = np.asarray(model.apply({"params": params}, tokens))
    out = np.asarray(model.apply({"params": qparams}, tokens))
    # Expected error from the weight error (|dW| <= s/2): well below the logits' own spread.
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.05, rel
    new = decoding.generate(config, qparams, [[3, 4, 5], [6]], max_new_tokens=5)
    assert new.shape == (2, 5)


def test_int8_kernel_bytes_about_a_quarter():
    config = presets.get("tiny-llama", d_model=144, d_ff=352)  # scales cost 4 bytes per output channel
    params = nn.meta.unbox(models.init_params(config, jax.random.PRNGKey(0)))
    stored, fp32 = kernel_bytes(quantize_params(config, params))
    assert fp32 > 0 and stored <= 0.27 * fp32, (stored, fp32)


def test_unknown_method_and_family_are_one_line_errors():
    config, params = model_and_params("tiny-gpt2")
    assert quantize(config, params, "none") is params
    with pytest.raises(InputError, match="unknown quantization 'int4'"):
        quantize(config, params, "int4")
    t5, t5_params = model_and_params("tiny-t5")
    with pytest.raises(InputError, match="decoder-only"):
        quantize(t5, t5_params, "int8")
