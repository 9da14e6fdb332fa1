"""Llama, Mistral, Qwen2, Qwen3: tiny random models made by transformers -> jaxformer.hf.load/save.

Odd sizes, grouped-query heads, head_dim != d_model / num_heads, RoPE scaling (llama3, yarn, linear),
sliding windows shorter than the prompts. Checked: fp32 logits on a left-padded batch (1e-5), 32 greedy
tokens through the KV cache == transformers.generate, save -> from_pretrained bit for bit, HF -> HF bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from support.causal_lm_parity import (  # noqa: E402
    PROMPTS,
    assert_save_round_trip,
    hf_greedy,
    hf_logits,
    left_padded,
    random_causal_lm,
)

from jaxformer import decoding, hf  # noqa: E402

UNTIED = dict(tie_word_embeddings=False)
CASES = {
    "llama": dict(
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=5000.0,
            factor=4.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        )
    ),
    "mistral": dict(sliding_window=5, rope_parameters=dict(rope_type="default", rope_theta=20000.0)),
    "qwen2": dict(
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
        tie_word_embeddings=True,
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
    ),
    "qwen3": dict(
        rope_parameters=dict(rope_type="yarn", rope_theta=1000000.0, factor=2.0, original_max_position_embeddings=32),
        attention_bias=False,
    ),
}


def perturb(name, tensor):
    """Biases and norm scales away from their init values, so a mix-up shows."""
    if name.endswith("bias") or "norm" in name:
        tensor.add_(torch.randn_like(tensor) * 0.1)


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    model_type = request.param
    directory = tmp_path_factory.mktemp(model_type)
    return model_type, random_causal_lm(model_type, {**UNTIED, **CASES[model_type]}, directory, perturb), directory


def test_logits_on_a_left_padded_batch_match_transformers(checkpoint):
    model_type, model, directory = checkpoint
    module, params, config = hf.load(directory)
    if model_type in ("mistral", "qwen2"):
        assert config.sliding_window is not None and config.sliding_window < len(PROMPTS[0])
    tokens, valid, positions = left_padded()
    got = np.asarray(module.apply({"params": params}, jnp.asarray(tokens), positions=positions, valid=valid))
    want = hf_logits(model, tokens, valid, positions)
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_transformers_generate(checkpoint):
    _, model, directory = checkpoint
    _, params, config = hf.load(directory)
    tokens, valid, _ = left_padded()
    got = decoding.generate(config, params, PROMPTS, max_new_tokens=32)
    np.testing.assert_array_equal(got, hf_greedy(model, tokens, valid, 32))


def test_save_then_from_pretrained_is_bit_exact(checkpoint, tmp_path):
    model_type, model, directory = checkpoint
    config, again = assert_save_round_trip(model, directory, tmp_path, model_type)
    assert again == config
