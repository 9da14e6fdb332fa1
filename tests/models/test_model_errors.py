"""Bad input gets a ValueError that names the field, the value and what is allowed."""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import models, presets
from jaxformer.config import ModelConfig
from jaxformer.layers import FeedForward, MultiHeadAttention, dot_product_attention
from jaxformer.layers.norms import make_norm


@functools.cache
def model_and_params(name: str):
    """The model and zero parameters of the right shapes (cheap: the checks run before any real compute)."""
    cfg = presets.get(name)
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), flax.linen.meta.unbox(models.abstract_params(cfg)))
    return models.build(cfg), params


def traced(model, params, *args, **kwargs):
    """Apply under `jax.eval_shape`: shape and length checks raise while tracing, and nothing is computed."""
    return jax.eval_shape(lambda: model.apply({"params": params}, *args, **kwargs))


def ids(batch, length, value=1):
    return jnp.full((batch, length), value, jnp.int32)


# Config fields -----------------------------------------------------------------------------------------------------


def test_d_model_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"d_model=36 is not divisible by num_heads=5") as err:
        ModelConfig(d_model=36, num_heads=5)
    assert "head_dim" in str(err.value)  # what to do instead
    assert ModelConfig(d_model=36, num_heads=5, head_dim=8).dim_per_head == 8  # explicit head size is allowed


@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 4), (4, 8)])
def test_heads_not_divisible_by_kv_heads(heads, kv_heads):
    with pytest.raises(ValueError, match=rf"num_heads={heads} is not divisible by num_kv_heads={kv_heads}") as err:
        ModelConfig(d_model=48, num_heads=heads, num_kv_heads=kv_heads)
    assert "must divide" in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("activation", "swish", "swiglu"),
        ("norm", "batchnorm", "rmsnorm"),
        ("position", "alibi", "rotary"),
        ("norm_position", "middle", "pre"),
        ("family", "decoder", "decoder_only"),
        ("attention_impl", "flash", "xla"),
        ("remat_policy", "some", "dots"),
        ("dtype", "fp8", "bfloat16"),
    ],
)
def test_unknown_names_list_the_allowed_ones(field, value, allowed):
    with pytest.raises(ValueError, match="choose one of") as err:
        ModelConfig(**{field: value})
    message = str(err.value)
    assert f"{field}={value!r}" in message
    assert repr(allowed) in message


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Did you mean 'gelu_tanh'\?"):
        ModelConfig(activation="gelu_tahn")


def test_unknown_field_and_preset():
    with pytest.raises(ValueError, match=r"no field 'd_modle'.*Did you mean 'd_model'"):
        presets.get("tiny-gpt2", d_modle=32)
    with pytest.raises(ValueError, match=r"unknown preset 'gpt3'.*Available: .*'gpt2-small'"):
        presets.get("gpt3")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"vocab_size": 0}, "vocab_size=0 must be a positive integer"),
        ({"dropout_rate": 1.0}, r"dropout_rate=1.0 must be a number in \[0, 1\)"),
        ({"position": "rotary", "d_model": 36, "num_heads": 4}, "needs an even head_dim, got head_dim=9"),
        ({"position": "sinusoidal", "d_model": 35, "num_heads": 5}, "needs an even d_model, got d_model=35"),
        ({"pad_token_id": 99, "vocab_size": 99}, r"pad_token_id=99 must be in \[0, vocab_size=99\)"),
    ],
)
def test_other_config_values(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        ModelConfig(**kwargs)


# Layers used on their own ------------------------------------------------------------------------------------------


def test_layer_level_names_are_checked():
    with pytest.raises(ValueError, match=r"activation='swish' is not allowed; choose one of .*'swiglu'"):
        jax.eval_shape(
            FeedForward(d_model=36, d_ff=37, activation="swish").init, jax.random.PRNGKey(0), jnp.ones((1, 2, 36))
        )
    with pytest.raises(ValueError, match=r"norm='batchnorm' is not allowed; choose one of \['layernorm', 'rmsnorm'\]"):
        make_norm("batchnorm", 1e-5, True, jnp.float32, jnp.float32)
    with pytest.raises(ValueError, match=r"num_heads=4 is not divisible by num_kv_heads=3"):
        attention = MultiHeadAttention(num_heads=4, head_dim=9, num_kv_heads=3)
        jax.eval_shape(attention.init, jax.random.PRNGKey(0), jnp.ones((1, 2, 36)))


Q, KV = jnp.ones((2, 7, 4, 9)), jnp.ones((2, 5, 2, 9))


@pytest.mark.parametrize("implementation", ["reference", "xla"])
@pytest.mark.parametrize("shape", [(2, 1, 7, 6), (3, 1, 7, 5), (7, 5), (2, 7, 5)])
def test_dot_product_attention_rejects_bad_mask_shape(implementation, shape):
    with pytest.raises(ValueError, match=r"mask shape \(") as err:
        dot_product_attention(Q, KV, KV, mask=jnp.ones(shape, bool), implementation=implementation)
    assert str(tuple(shape)) in str(err.value) and "(2, 4, 7, 5)" in str(err.value)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_dot_product_attention_rejects_bad_bias_and_heads(implementation):
    with pytest.raises(ValueError, match=r"bias shape \(1, 4, 7, 6\) does not broadcast to .*\(2, 4, 7, 5\)"):
        dot_product_attention(Q, KV, KV, bias=jnp.ones((1, 4, 7, 6)), implementation=implementation)
    odd_kv = jnp.ones((2, 5, 3, 9))
    with pytest.raises(ValueError, match=r"num_heads=4 is not divisible by num_kv_heads=3"):
        dot_product_attention(Q, odd_kv, odd_kv, implementation=implementation)
    with pytest.raises(ValueError, match=r"attention_impl='flash' is not allowed"):
        dot_product_attention(Q, KV, KV, implementation="flash")


# Model inputs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_input_longer_than_max_len(name):
    model, params = model_and_params(name)
    with pytest.raises(ValueError, match=r"tokens length 65 exceeds the model's maximum positions max_len=64"):
        traced(model, params, ids(1, 65))


def test_seq2seq_source_and_target_longer_than_max_len():
    model, params = model_and_params("tiny-t5")
    with pytest.raises(ValueError, match=r"source length 70 exceeds .* max_len=64"):
        traced(model, params, ids(1, 70), ids(1, 3))
    with pytest.raises(ValueError, match=r"target length 65 exceeds .* max_len=64"):
        traced(model, params, ids(1, 3), ids(1, 65))


@pytest.mark.parametrize("field", ["valid", "positions", "segment_ids", "token_type_ids"])
def test_encoder_rejects_mismatched_side_inputs(field):
    model, params = model_and_params("tiny-bert")
    with pytest.raises(ValueError, match=rf"{field} has shape \(2, 6\) but tokens are \(2, 7\)"):
        traced(model, params, ids(2, 7), **{field: ids(2, 6)})


def test_decoder_rejects_mismatched_valid_and_bad_tokens():
    model, params = model_and_params("tiny-gpt2")
    with pytest.raises(ValueError, match=r"valid has shape \(2, 1, 7\) but tokens are \(2, 7\)"):
        traced(model, params, ids(2, 7), valid=jnp.ones((2, 1, 7), bool))
    with pytest.raises(ValueError, match=r"tokens must be \[B, T\] integer ids, got shape \(7,\)"):
        traced(model, params, jnp.ones((7,), jnp.int32))
    with pytest.raises(ValueError, match=r"token ids must be integers, got dtype float32"):
        traced(model, params, jnp.ones((2, 7), jnp.float32))


def test_out_of_range_ids_are_not_clamped_silently():
    model, params = model_and_params("tiny-gpt2")
    with pytest.raises(ValueError, match=r"token ids \(vocab_size\) contain 99, outside \[0, 99\)"):
        model.apply({"params": params}, ids(2, 7).at[1, 3].set(99))
    with pytest.raises(ValueError, match=r"positions \(max_len\) contain 64, outside \[0, 64\)"):
        model.apply({"params": params}, ids(2, 7), positions=jnp.broadcast_to(jnp.arange(58, 65), (2, 7)))
    bert, bert_params = model_and_params("tiny-bert")
    with pytest.raises(ValueError, match=r"token_type_ids \(num_token_types\) contain 2, outside \[0, 2\)"):
        bert.apply({"params": bert_params}, ids(2, 7), token_type_ids=ids(2, 7, value=2))


def test_seq2seq_rejects_mismatched_inputs():
    model, params = model_and_params("tiny-t5")
    source, target = ids(2, 7), ids(2, 5)
    with pytest.raises(ValueError, match=r"source_valid has shape \(2, 6\) but tokens are \(2, 7\)"):
        traced(model, params, source, target, source_valid=jnp.ones((2, 6), bool))
    with pytest.raises(ValueError, match=r"target_valid has shape \(2, 4\) but tokens are \(2, 5\)"):
        traced(model, params, source, target, target_valid=jnp.ones((2, 4), bool))
    encoded = jnp.zeros((2, 7, 36))
    with pytest.raises(ValueError, match=r"source_valid has shape \(2, 6\) but encoded is \(2, 7, 36\)"):
        traced(model, params, target, encoded, jnp.ones((2, 6), bool), method="decode_step")
    with pytest.raises(ValueError, match=r"source_segment_ids was given without its partner"):
        traced(model, params, source, target, source_segment_ids=ids(2, 7))


def test_decode_needs_a_decoder():
    with pytest.raises(ValueError, match=r"decode=True needs a decoder: family='encoder_only'"):
        models.build(presets.get("tiny-bert"), decode=True)
