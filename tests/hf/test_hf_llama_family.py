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

from jaxformer import decoding, hf  # noqa: E402
from jaxformer.hf import files  # noqa: E402

COMMON = dict(
    vocab_size=97,
    hidden_size=30,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)
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
PROMPTS = [[1, 17, 29, 40, 8, 12, 5, 66, 91], [1, 22, 9, 31], [1, 50, 3, 77, 14, 38]]


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    model_type = request.param
    config = transformers.AutoConfig.for_model(model_type, **{**COMMON, **CASES[model_type]})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # biases and norm scales away from their init values, so a mix-up shows
        for name, tensor in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                tensor.add_(torch.randn_like(tensor) * 0.1)
    directory = tmp_path_factory.mktemp(model_type)
    model.save_pretrained(directory)
    return model_type, model, directory


def left_padded():
    tokens, valid = decoding.pack_prompts(PROMPTS)
    return tokens, valid, decoding.positions_from_valid(valid)


def test_logits_on_a_left_padded_batch_match_transformers(checkpoint):
    model_type, model, directory = checkpoint
    module, params, config = hf.load(directory)
    if model_type in ("mistral", "qwen2"):
        assert config.sliding_window is not None and config.sliding_window < len(PROMPTS[0])
    tokens, valid, positions = left_padded()
    got = np.asarray(module.apply({"params": params}, jnp.asarray(tokens), positions=positions, valid=valid))
    with torch.no_grad():
        want = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(valid, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        ).logits.numpy()
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_transformers_generate(checkpoint):
    _, model, directory = checkpoint
    _, params, config = hf.load(directory)
    tokens, valid, _ = left_padded()
    got = decoding.generate(config, params, PROMPTS, max_new_tokens=32)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(valid, dtype=torch.long),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            pad_token_id=0,
        )
    np.testing.assert_array_equal(got, out[:, tokens.shape[1] :].numpy())


def test_save_then_from_pretrained_is_bit_exact(checkpoint, tmp_path):
    model_type, model, directory = checkpoint
    _, params, config = hf.load(directory)
    hf.save(config, params, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert reloaded.config.model_type == model_type
    want = model.state_dict()
    got = reloaded.state_dict()
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    original = files.read_tensors(directory)
    written = files.read_tensors(tmp_path)
    assert sorted(written) == sorted(original)  # HF -> jaxformer -> HF: the same files' tensors
    for name, tensor in original.items():
        np.testing.assert_array_equal(written[name], tensor)
    tokens, valid, _ = left_padded()
    with torch.no_grad():
        args = dict(
            input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid, dtype=torch.long)
        )
        np.testing.assert_array_equal(reloaded(**args).logits.numpy(), model(**args).logits.numpy())
