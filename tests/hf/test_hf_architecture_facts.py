"""Architecture facts once: each preset and its `hf/<family>.py` share one statement of the family's fixed fields.

A config made by `transformers` itself (its defaults at the published size, or a tiny random model at the tiny
preset's sizes, tensors included) imports to exactly the preset's `ModelConfig`, and export writes back the HF
values it was read from, key for key, from the same table.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from transformers.activations import ACT2FN

from jaxformer import hf as jaxformer_hf
from jaxformer import models, presets
from jaxformer.architectures import bert as bert_arch
from jaxformer.architectures import gpt2 as gpt2_arch
from jaxformer.architectures import llama as llama_arch
from jaxformer.architectures import marian as marian_arch
from jaxformer.architectures import t5 as t5_arch
from jaxformer.config import ModelConfig
from jaxformer.hf import bert, gpt2, llama, marian, t5

TINY_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
OPUS_MT_EN_DE = dict(  # Helsinki-NLP/opus-mt-en-de config.json sizes
    vocab_size=58101,
    decoder_vocab_size=58101,
    d_model=512,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=2048,
    max_position_embeddings=512,
    activation_function="swish",
    scale_embedding=True,
    pad_token_id=58100,
    decoder_start_token_id=58100,
)
TINY_MARIAN = dict(
    vocab_size=99,
    decoder_vocab_size=99,
    d_model=36,
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    max_position_embeddings=64,
    activation_function="swish",
    scale_embedding=True,
    dropout=0.0,
    pad_token_id=98,
    decoder_start_token_id=98,
)

# (preset, its hf module, architecture module, transformers model class, HF config) for every family.
CASES = {
    "gpt2-small": (gpt2, gpt2_arch, tf.GPT2LMHeadModel, lambda: tf.GPT2Config()),
    "tiny-gpt2": (
        gpt2,
        gpt2_arch,
        tf.GPT2LMHeadModel,
        lambda: tf.GPT2Config(
            vocab_size=99, n_embd=36, n_head=4, n_inner=37, n_layer=2, n_positions=64, **TINY_DROPOUT
        ),
    ),
    "bert-base": (bert, bert_arch, tf.BertModel, lambda: tf.BertConfig()),
    "tiny-bert": (
        bert,
        bert_arch,
        tf.BertModel,
        lambda: tf.BertConfig(
            vocab_size=99,
            hidden_size=36,
            num_attention_heads=4,
            intermediate_size=37,
            num_hidden_layers=3,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
    ),
    "t5-small": (t5, t5_arch, tf.T5ForConditionalGeneration, lambda: tf.T5Config()),
    "tiny-t5": (
        t5,
        t5_arch,
        tf.T5ForConditionalGeneration,
        lambda: tf.T5Config(
            vocab_size=99,
            d_model=36,
            num_heads=4,
            d_kv=10,
            d_ff=37,
            num_layers=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            dropout_rate=0.0,
            n_positions=64,
        ),
    ),
    "marian-opus-mt-en-de": (marian, marian_arch, tf.MarianMTModel, lambda: tf.MarianConfig(**OPUS_MT_EN_DE)),
    "tiny-marian": (marian, marian_arch, tf.MarianMTModel, lambda: tf.MarianConfig(**TINY_MARIAN)),
    "tiny-llama": (
        llama,
        llama_arch,
        tf.LlamaForCausalLM,
        lambda: tf.LlamaConfig(
            vocab_size=99,
            hidden_size=36,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=37,
            num_hidden_layers=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
    ),
}


def converter(module):
    """The hf.common.Architecture of a family module (hf/llama.py serves four model types: take "llama")."""
    return module.ARCHITECTURES["llama"] if module is llama else module.ARCHITECTURE


def normalized(config: ModelConfig) -> ModelConfig:
    """None sizes mean "derive it" (decoder layers = encoder layers, head_dim = d_model / heads, kv heads = heads):
    spell them out on both sides."""
    return dataclasses.replace(
        config, num_decoder_layers=config.decoder_layers, head_dim=config.dim_per_head, num_kv_heads=config.kv_heads
    )


def hf_checkpoint(model_class, hf_config) -> tuple[dict, dict]:
    """(config.json dict, {tensor name: array}) as a checkpoint of `model_class` would store them.

    Tiny models are built with real random weights; full sizes on the meta device, their tensors standing in
    by name only (tied copies such as lm_head.weight dropped, as `save_pretrained` does)."""
    tiny = hf_config.vocab_size < 1000
    torch.manual_seed(0)
    with torch.device("cpu" if tiny else "meta"):
        model = model_class(hf_config).eval()
    state = model.state_dict()
    if tiny:
        tensors = {name: value.detach().numpy() for name, value in state.items()}
    else:
        tensors = {name: np.zeros(1, np.float32) for name in state if not name.startswith("lm_head.")}
    prefix = {"GPT2LMHeadModel": "transformer.", "MarianMTModel": "model.", "LlamaForCausalLM": "model."}
    prefix = prefix.get(model_class.__name__, "")
    tensors = {name.removeprefix(prefix): value for name, value in tensors.items()}
    return hf_config.to_dict(), tensors


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_config_imports_to_the_preset(name):
    module, arch, model_class, make_config = CASES[name]
    hf, tensors = hf_checkpoint(model_class, make_config())
    imported = converter(module).config_from_hf(hf, tensors)
    preset = presets.get(name)
    assert normalized(imported) == normalized(preset)
    stated = [field for field, value in arch.FIXED.items() if arch.PRESETS[name][field] == value]  # not resized
    assert stated
    for field in stated:  # spelled out: the family's one statement is what the HF config imports to
        assert getattr(imported, field) == arch.FIXED[field], field


def meta_shapes(model_class, hf: dict) -> dict:
    config_class = model_class.config_class
    with torch.device("meta"):
        model = model_class(config_class.from_dict(hf))
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def same_activation(a: str, b: str) -> bool:
    """Two HF activation names compute the same function (e.g. "swish" and "silu")."""
    x = torch.linspace(-4.0, 4.0, 101)
    return bool(torch.allclose(ACT2FN[a](x), ACT2FN[b](x), atol=1e-6))


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_writes_back_the_hf_values(name):
    module, _, model_class, make_config = CASES[name]
    hf, tensors = hf_checkpoint(model_class, make_config())
    exported = converter(module).config_to_hf(converter(module).config_from_hf(hf, tensors))
    written = [hf_key for key in module.KEYS for hf_key in (key.hf, *key.twins)]
    compared = [k for k in written if k in hf]
    assert len(compared) >= len(written) - 1  # T5Config() has no n_positions; every other key is in the config
    for key in compared:
        if key in ("activation_function", "hidden_act"):
            assert same_activation(exported[key], hf[key]), (key, exported[key], hf[key])
        elif hf[key] is None:  # HF's "derive it" (GPT-2 n_inner: 4 * n_embd): the same tensor shapes
            assert meta_shapes(model_class, {**hf, key: exported[key]}) == meta_shapes(model_class, hf), key
        else:
            assert exported[key] == hf[key], (key, exported[key], hf[key])
    rebuilt = {**hf, **exported}  # what transformers reads back is the same model
    assert normalized(converter(module).config_from_hf(rebuilt, tensors)) == normalized(presets.get(name))


@pytest.mark.parametrize("module", [gpt2, bert, t5, marian], ids=lambda m: m.MODEL_TYPE)
def test_export_checks_the_fixed_fields_that_no_key_carries(module):
    arch = {gpt2: gpt2_arch, bert: bert_arch, t5: t5_arch, marian: marian_arch}[module]
    carried = {key.field for key in module.KEYS}
    free = set(module.DERIVED) | {"initializer_range"}  # decided by the tensors / T5 has no such key
    assert set(arch.FIXED) - carried - free <= set(module.EXPORT_FIELDS)
    assert not carried & set(module.EXPORT_FIELDS)  # a value config.json carries is written, not refused
    for field, value in arch.FIXED.items():
        if field in module.EXPORT_FIELDS:
            assert module.EXPORT_FIELDS[field] == value, field


def test_marian_preset_parameter_count_matches_transformers():
    """opus-mt-en-de at its config.json sizes: HF's parameters minus its two fixed sinusoid tables, plus the
    final_logits_bias buffer, are jaxformer's parameters."""
    with torch.device("meta"):
        model = tf.MarianMTModel(tf.MarianConfig(**OPUS_MT_EN_DE))
    hf_params = {id(p): p.numel() for p in model.parameters()}  # tied tables counted once
    positions = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith("embed_positions"))
    expected = sum(hf_params.values()) - positions + model.final_logits_bias.numel()
    assert models.param_count(presets.get("marian-opus-mt-en-de")) == expected


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-roberta", "tiny-distilbert"])
def test_export_refuses_bart_position_offset_on_families_without_it(name, tmp_path):
    """BART's learned-position offset has no counterpart in these families: export says so, not IndexError."""
    config = presets.get(name, position_offset=2)
    init = lambda: models.build(config).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))  # noqa: E731
    with pytest.raises(ValueError, match="position_offset"):
        jaxformer_hf.save(config, jax.eval_shape(init)["params"], tmp_path)
