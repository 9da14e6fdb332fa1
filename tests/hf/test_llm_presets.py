"""Llama / Mistral / Qwen presets: parameter counts equal `transformers` built on the meta device.

Two independent routes to the HF model: (a) the preset exported through `jaxformer.hf`'s config
translation, (b) a literal copy of the published `config.json` values (below, from the Hub repos).
Both must give the count of `models.param_count` (jax.eval_shape of init, nothing allocated), and (b)
imported through `config_from_hf` must give the preset itself. Tied weights count once (PyTorch's
`parameters()` yields a shared tensor once; jaxformer has no separate head when tied).
"""

from __future__ import annotations

import dataclasses

import jax
import pytest
from flax import linen as nn

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxformer import models, presets  # noqa: E402
from jaxformer.hf import convert  # noqa: E402

# Published config.json values (only the keys the architecture reads), and the published size.
PUBLISHED: dict[str, tuple[str, dict, int]] = {
    "smollm2-135m": (  # HuggingFaceTB/SmolLM2-135M
        "llama",
        dict(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
            rope_theta=100000.0, rope_scaling=None, tie_word_embeddings=True, hidden_act="silu",
            initializer_range=0.041666666666666664, attention_bias=False, mlp_bias=False,
        ),
        134_515_008,
    ),
    "llama-3.2-1b": (  # meta-llama/Llama-3.2-1B
        "llama",
        dict(
            vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
            rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
            initializer_range=0.02, attention_bias=False, mlp_bias=False,
            rope_scaling=dict(
                rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
        ),
        1_235_814_400,
    ),
    "llama-3.1-8b": (  # meta-llama/Llama-3.1-8B
        "llama",
        dict(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5,
            rope_theta=500000.0, tie_word_embeddings=False, hidden_act="silu", initializer_range=0.02,
            attention_bias=False, mlp_bias=False,
            rope_scaling=dict(
                rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
        ),
        8_030_261_248,
    ),
    "mistral-7b-v0.1": (  # mistralai/Mistral-7B-v0.1
        "mistral",
        dict(
            vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
            rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False, hidden_act="silu",
            initializer_range=0.02,
        ),
        7_241_732_096,
    ),
    "qwen2.5-0.5b": (  # Qwen/Qwen2.5-0.5B
        "qwen2",
        dict(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_theta=1000000.0, sliding_window=32768, max_window_layers=24, use_sliding_window=False,
            tie_word_embeddings=True, hidden_act="silu", initializer_range=0.02,
        ),
        494_032_768,
    ),
    "qwen3-0.6b": (  # Qwen/Qwen3-0.6B
        "qwen3",
        dict(
            vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
            rms_norm_eps=1e-6, rope_theta=1000000.0, sliding_window=None, max_window_layers=28,
            use_sliding_window=False, tie_word_embeddings=True, hidden_act="silu", initializer_range=0.02,
            attention_bias=False,
        ),
        596_049_920,
    ),
}  # fmt: skip
TINY = {"tiny-llama": "llama", "tiny-mistral": "mistral", "tiny-qwen2": "qwen2", "tiny-qwen3": "qwen3"}


def meta_count(model_type: str, values: dict) -> int:
    """Parameters of AutoModelForCausalLM(config) built on the meta device (no weights allocated)."""
    config = transformers.AutoConfig.for_model(model_type, **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())  # a tied (shared) tensor is yielded once


def abstract_count(name: str) -> int:
    """Sum of the sizes of `jax.eval_shape(init)`'s leaves for preset `name`."""
    leaves = jax.tree.leaves(nn.meta.unbox(models.abstract_params(presets.get(name))))
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    return sum(leaf.size for leaf in leaves)


def exported(name: str) -> tuple[str, dict]:
    """(model_type, config.json dict) that `jaxformer.hf.save` writes for preset `name`."""
    config = presets.get(name)
    arch = convert.architecture_for(config)
    return arch.model_type, arch.config_to_hf(config)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_count_equals_transformers_meta_device(name: str) -> None:
    model_type, published, size = PUBLISHED[name]
    count = abstract_count(name)
    exported_type, exported_values = exported(name)
    print(f"{name}: jaxformer {count:,}  transformers {size:,}")
    assert exported_type == model_type
    assert meta_count(model_type, published) == size  # the published config, not our translation
    assert meta_count(exported_type, exported_values) == size
    assert count == size


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_config_imports_as_the_preset(name: str) -> None:
    model_type, published, _ = PUBLISHED[name]
    imported = convert.ARCHITECTURES[model_type].config_from_hf(published, {})
    preset = presets.get(name)
    preset = preset.replace(head_dim=preset.dim_per_head)  # import always states head_dim
    differ = {
        f.name: (getattr(preset, f.name), getattr(imported, f.name))
        for f in dataclasses.fields(preset)
        if getattr(preset, f.name) != getattr(imported, f.name)
    }
    assert not differ, differ


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_twin_count_and_export_round_trip(name: str) -> None:
    model_type, values = exported(name)
    assert model_type == TINY[name]
    assert meta_count(model_type, values) == abstract_count(name)
    config = presets.get(name)
    back = convert.ARCHITECTURES[model_type].config_from_hf(values, {})
    assert back == config.replace(head_dim=config.dim_per_head)


def test_tiny_twins_are_odd_sized_and_exercise_their_family() -> None:
    mistral, qwen2, qwen3 = (presets.get(n) for n in ("tiny-mistral", "tiny-qwen2", "tiny-qwen3"))
    assert mistral.sliding_window is not None and mistral.sliding_window < mistral.max_len
    assert qwen2.qkv_bias and not qwen2.qk_norm
    assert qwen3.qk_norm and qwen3.dim_per_head * qwen3.num_heads != qwen3.d_model
    for config in (mistral, qwen2, qwen3):
        sizes = [config.vocab_size, config.d_model, config.d_ff]
        assert len(set(sizes)) == 3 and config.kv_heads < config.num_heads
