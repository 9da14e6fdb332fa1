"""Gemma, Gemma 2, Gemma 3 (text): tiny random models made by transformers -> jaxformer.hf.load/save.

Odd sizes, grouped-query heads, head_dim != d_model / num_heads, sliding windows shorter than the
prompts (Gemma 2 alternating, Gemma 3 local/global with its own local RoPE base and linear scaling
on the global layers), attention- and final-logit soft-capping that bite (weights drawn large enough
that logits reach the caps). Checked: fp32 logits on a left-padded batch (1e-5), 32 greedy tokens
through the KV cache == transformers.generate, save -> from_pretrained bit for bit, HF -> jaxformer ->
HF bit-exact unsharded and sharded; the published presets' parameter counts == transformers on the
meta device, and every full-size preset initialises abstractly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.causal_lm_parity import (  # noqa: E402
    PROMPTS,
    assert_save_round_trip,
    hf_greedy,
    hf_logits,
    left_padded,
    random_causal_lm,
)

from jaxformer import decoding, hf, models, presets  # noqa: E402
from jaxformer.hf import files  # noqa: E402

SLIDE, FULL = "sliding_attention", "full_attention"
CASES = {
    "gemma": dict(tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=20000.0)),
    "gemma2": dict(
        sliding_window=4,
        query_pre_attn_scalar=12,
        attn_logit_softcapping=1.0,
        final_logit_softcapping=2.0,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
    ),
    "gemma3_text": dict(
        num_hidden_layers=4,
        layer_types=[SLIDE, SLIDE, FULL, SLIDE],
        sliding_window=5,
        query_pre_attn_scalar=10,
        final_logit_softcapping=2.5,
        rope_parameters={
            FULL: dict(rope_type="linear", rope_theta=1000000.0, factor=2.0),
            SLIDE: dict(rope_type="default", rope_theta=10000.0),
        },
    ),
}


def perturb(name, tensor):
    """Large enough that soft-caps bite; norm weights away from 0 so (1 + w) shows."""
    tensor.normal_(0.0, 0.3 if "norm" in name else 0.15)


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    model_type = request.param
    directory = tmp_path_factory.mktemp(model_type)
    model = random_causal_lm(model_type, CASES[model_type], directory, perturb)
    # No end-of-sequence in generate: with one, min_new_tokens masks its logit and greedy picks the runner-up
    # where the argmax is the eos id (jaxformer's generate has no eos here and keeps the argmax).
    model.generation_config.eos_token_id = None
    return model_type, model, directory


def test_config_translation_reads_every_gemma_feature(checkpoint):
    model_type, model, directory = checkpoint
    _, _, config = hf.load(directory)
    assert config.norm_scale_offset == 1.0 and config.embed_scale and config.activation == "geglu_tanh"
    assert config.dim_per_head == 8 and config.num_heads * config.dim_per_head != config.d_model
    if model_type == "gemma":
        assert not config.sandwich_norms and config.sliding_window is None and not config.tie_embeddings
        return
    hf_config = model.config
    assert config.sandwich_norms and config.query_pre_attn_scalar == hf_config.query_pre_attn_scalar
    if model_type == "gemma2":  # transformers' Gemma 3 attention has no soft-cap
        assert config.attn_logit_softcap == hf_config.attn_logit_softcapping == 1.0
    assert config.final_logit_softcap == hf_config.final_logit_softcapping
    assert config.sliding_window is not None and config.sliding_window < len(PROMPTS[0])
    want_local = [i for i, kind in enumerate(hf_config.layer_types) if kind == SLIDE]
    assert [i for i, w in enumerate(config.layer_windows()) if w] == want_local
    if model_type == "gemma3_text":
        assert config.qk_norm and config.rope_local_base == 10000.0 and config.rotary_base == 1000000.0
        assert config.rope_scaling == "linear" and config.rope_factor == 2.0
    tokens, valid, positions = left_padded()  # the final cap is reached: tanh is far from linear there
    want = hf_logits(model, tokens, valid, positions)
    assert np.abs(want).max() > 0.6 * config.final_logit_softcap
    if model_type == "gemma2":  # the attention cap bites too: without it the logits move
        _, params, _ = hf.load(directory)
        uncapped = models.build(config.replace(attn_logit_softcap=None))
        got = uncapped.apply({"params": params}, jnp.asarray(tokens), positions=positions, valid=valid)
        assert np.abs(np.asarray(got)[valid] - want[valid]).max() > 1e-2


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_logits_on_a_left_padded_batch_match_transformers(checkpoint, scan):
    _, model, directory = checkpoint
    _, params, config = hf.load(directory)
    if scan:  # per-layer windows and RoPE bases go through nn.scan as data
        config = config.replace(scan_layers=True)
        params = {**params, "decoder": models.stack_layer_params(params["decoder"], config.num_layers)}
    tokens, valid, positions = left_padded()
    module = models.build(config)
    got = np.asarray(module.apply({"params": params}, jnp.asarray(tokens), positions=positions, valid=valid))
    want = hf_logits(model, tokens, valid, positions)
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_transformers_generate(checkpoint):
    model_type, model, directory = checkpoint
    _, params, config = hf.load(directory)
    if model_type == "gemma3_text":  # the KV-cache decode with per-layer windows and RoPE bases as scanned data
        config = config.replace(scan_layers=True)
        params = {**params, "decoder": models.stack_layer_params(params["decoder"], config.num_layers)}
    tokens, valid, _ = left_padded()
    got = decoding.generate(config, params, PROMPTS, max_new_tokens=32)
    np.testing.assert_array_equal(got, hf_greedy(model, tokens, valid, 32))


@pytest.mark.parametrize("shard", [None, "4KB"], ids=["unsharded", "sharded"])
def test_save_then_from_pretrained_is_bit_exact(checkpoint, tmp_path, shard):
    model_type, model, directory = checkpoint
    config, again = assert_save_round_trip(model, directory, tmp_path, model_type, max_shard_size=shard)
    if shard is not None:
        assert (tmp_path / files.SAFETENSORS_INDEX).exists()
    assert again == config


# Published config.json values (google/gemma-2b, google/gemma-2-2b, google/gemma-3-1b-pt), written out
# here independently of jaxformer's presets.
PUBLISHED = {
    "gemma-2b": (
        "gemma",
        dict(
            vocab_size=256000,
            hidden_size=2048,
            intermediate_size=16384,
            num_hidden_layers=18,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
            max_position_embeddings=8192,
        ),
    ),
    "gemma-2-2b": (
        "gemma2",
        dict(
            vocab_size=256000,
            hidden_size=2304,
            intermediate_size=9216,
            num_hidden_layers=26,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            max_position_embeddings=8192,
            query_pre_attn_scalar=256,
            sliding_window=4096,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        ),
    ),
    "gemma-3-1b": (
        "gemma3_text",
        dict(
            vocab_size=262144,
            hidden_size=1152,
            intermediate_size=6912,
            num_hidden_layers=26,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            max_position_embeddings=32768,
            query_pre_attn_scalar=256,
            sliding_window=512,
            rope_theta=1000000.0,
            rope_local_base_freq=10000.0,
            sliding_window_pattern=6,
        ),
    ),
}


def abstract_param_count(config) -> int:
    module = models.build(config)
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda t: module.init(jax.random.PRNGKey(0), t), tokens)["params"]
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_count_equals_transformers_on_meta_device(name):
    model_type, values = PUBLISHED[name]
    hf_config = transformers.AutoConfig.for_model(model_type, **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    want = sum(p.numel() for p in model.parameters())
    if name == "gemma-2-2b":
        assert want == 2_614_341_888  # the figure of issue 19
    config = presets.get(name)
    assert abstract_param_count(config) == want  # jax.eval_shape: the full-size preset initialises abstractly
    assert abstract_param_count(config.replace(scan_layers=True)) == want
    local = [i for i, kind in enumerate(hf_config.layer_types) if kind == SLIDE] if model_type != "gemma" else []
    assert [i for i, w in enumerate(config.layer_windows()) if w] == local
    if model_type != "gemma":
        assert config.sliding_window == hf_config.sliding_window
        assert config.query_pre_attn_scalar == hf_config.query_pre_attn_scalar
        assert config.attn_logit_softcap == hf_config.attn_logit_softcapping
        assert config.final_logit_softcap == hf_config.final_logit_softcapping


def test_presets_export_to_their_own_model_type():
    want = {"tiny-gemma": "gemma", "tiny-gemma2": "gemma2", "tiny-gemma3": "gemma3_text"}
    want.update({"gemma-2b": "gemma", "gemma-2-2b": "gemma2", "gemma-3-1b": "gemma3_text"})
    for name, model_type in want.items():
        assert hf.convert.architecture_for(presets.get(name)).model_type == model_type, name


def test_export_refuses_a_gemma_without_its_features(tmp_path):
    config = presets.get("tiny-gemma2", sandwich_norms=False, attn_logit_softcap=None)  # routes to gemma
    shapes = jax.eval_shape(lambda: models.build(config).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32)))
    with pytest.raises(ValueError, match="cannot export to Hugging Face gemma: sliding_window"):
        hf.save(config, shapes["params"], tmp_path)
