"""Flax NNX through `flax.nnx.bridge.ToNNX`: every public layer and the three model families give the Linen
module's outputs on the same parameters, train with `nnx.Optimizer`, and convert parameters both ways bit for bit."""

from __future__ import annotations

import contextlib
import functools
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util
from support.readme import printed_claims, python_block_after

from jaxformer import models, nnx_bridge, presets
from jaxformer.layers import (
    Embed,
    FeedForward,
    LayerNorm,
    LearnedPositions,
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    TransformerBlock,
    causal_mask,
    key_padding_mask,
)

B, T, S, D = 2, 7, 5, 12


def ints(shape, high=99, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, high, size=shape), jnp.int32)


def floats(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def valid(lengths, total):
    return jnp.arange(total)[None, :] < jnp.asarray(lengths)[:, None]


def layer_cases():
    """(id, Linen module, positional inputs, keyword inputs) for the public layers."""
    gpt2 = presets.get("tiny-gpt2")
    x = floats((B, T, gpt2.d_model))
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    return [
        ("attention", MultiHeadAttention(num_heads=3, head_dim=5), (floats((B, T, D)),), dict(mask=causal_mask(T))),
        (
            "cross_attention_rotary_gqa",
            MultiHeadAttention(num_heads=4, head_dim=6, num_kv_heads=2, rotary=True, is_cross_attention=True),
            (floats((B, T, D)), floats((B, S, D), seed=1)),
            dict(mask=key_padding_mask(valid([5, 3], S), T), positions=positions, kv_positions=positions[:, :S]),
        ),
        ("feedforward", FeedForward(d_model=D, d_ff=13), (floats((B, T, D)),), {}),
        (
            "swiglu_feedforward",
            FeedForward(d_model=D, d_ff=13, activation="swiglu", use_bias=False),
            (floats((B, T, D)),),
            {},
        ),
        ("layernorm", LayerNorm(), (floats((B, T, D)),), {}),
        ("rmsnorm", RMSNorm(), (floats((B, T, D)),), {}),
        ("embed", Embed(vocab_size=99, d_model=D), (ints((B, T)),), {}),
        ("learned_positions", LearnedPositions(max_len=64, d_model=D), (positions,), {}),
        ("relative_position_bias", RelativePositionBias(num_heads=4, num_buckets=8), (positions, positions), {}),
        ("block", TransformerBlock(gpt2), (x,), dict(mask=causal_mask(T))),
    ]


LAYERS = {case[0]: case[1:] for case in layer_cases()}


def model_inputs(config):
    """Padded batches: tokens [B, T] (or source [B, S], target [B, T]) with their valid masks."""
    if config.family == "encoder_decoder":
        return (ints((B, S)), ints((B, T), seed=1)), dict(source_valid=valid([S, 3], S), target_valid=valid([T, 4], T))
    return (ints((B, T)),), dict(valid=valid([T, 4], T))


SLOW = pytest.mark.slow
# One tiny preset per family in the default suite; the other tiny presets (RoPE + GQA, sinusoidal, Marian) slow.
MODELS = [
    "tiny-bert",
    "tiny-gpt2",
    "tiny-t5",
    pytest.param("tiny-llama", marks=SLOW),
    pytest.param("tiny-transformer", marks=SLOW),
    pytest.param("tiny-marian", marks=SLOW),
]


@functools.cache
def linen_setup(name: str):
    """(Linen module, inputs, kwargs, plain Linen params) of a layer case or a tiny preset."""
    if name in LAYERS:
        module, inputs, kwargs = LAYERS[name]
    else:
        module = models.build(presets.get(name))
        inputs, kwargs = model_inputs(presets.get(name))
    params = nn.meta.unbox(module.init(jax.random.PRNGKey(1), *inputs, **kwargs)).get("params", {})
    return module, inputs, kwargs, params


def assert_same_outputs(got, want):
    leaves_got, leaves_want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert leaves_want
    for a, b in zip(leaves_got, leaves_want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def assert_bit_exact(got, want):
    flat_got, flat_want = traverse_util.flatten_dict(got), traverse_util.flatten_dict(want)
    assert set(flat_got) == set(flat_want)
    for path, value in flat_want.items():
        assert flat_got[path].dtype == value.dtype, path
        assert np.array_equal(np.asarray(flat_got[path]), np.asarray(value)), path


@pytest.mark.parametrize("name", [*LAYERS, *MODELS])
def test_nnx_module_gives_the_linen_outputs_on_the_same_params(name):
    module, inputs, kwargs, params = linen_setup(name)
    model = nnx_bridge.to_nnx(module, *inputs, params=params, **kwargs)
    assert_same_outputs(model(*inputs, **kwargs), module.apply({"params": params}, *inputs, **kwargs))


@pytest.mark.parametrize("name", [*LAYERS, *MODELS])
def test_params_round_trip_linen_nnx_linen_bit_exact(name):
    module, inputs, kwargs, params = linen_setup(name)
    model = nnx_bridge.to_nnx(module, *inputs, params=params, **kwargs)
    assert_bit_exact(nnx_bridge.linen_params(model), params)


@pytest.mark.parametrize("name", ["tiny-gpt2", pytest.param("tiny-t5", marks=SLOW)])
def test_nnx_initialised_module_is_the_linen_module_on_its_exported_params(name):
    module, inputs, kwargs, linen = linen_setup(name)
    model = nnx_bridge.to_nnx(module, *inputs, rngs=nnx.Rngs(7), **kwargs)
    params = nnx_bridge.linen_params(model)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, linen)
    assert not np.array_equal(params["embed"]["embedding"], linen["embed"]["embedding"])  # its own random init
    assert_same_outputs(model(*inputs, **kwargs), module.apply({"params": params}, *inputs, **kwargs))
    # and loading Linen params into it gives the Linen outputs
    nnx_bridge.load_linen_params(model, linen)
    assert_same_outputs(model(*inputs, **kwargs), module.apply({"params": linen}, *inputs, **kwargs))


def test_parameters_keep_their_logical_axes():
    module, inputs, kwargs, params = linen_setup("tiny-gpt2")
    model = nnx_bridge.to_nnx(module, *inputs, params=params, **kwargs)
    assert model.decoder["layers_0"]["mlp"]["up_kernel"].get_metadata()["out_sharding"] == ("embed", "mlp")
    assert model.embed["embedding"].get_metadata()["out_sharding"] == ("vocab", "embed")


def test_encoder_decoder_methods_run_through_nnx():
    module, (source, _), kwargs, params = linen_setup("tiny-t5")
    model = nnx_bridge.to_nnx(module, source, ints((B, T), seed=1), params=params, **kwargs)
    got = model.encode(source, kwargs["source_valid"])
    assert_same_outputs(got, module.apply({"params": params}, source, kwargs["source_valid"], method="encode"))


@pytest.mark.parametrize("name", ["tiny-gpt2", pytest.param("tiny-t5", marks=SLOW)])
def test_nnx_optimizer_step_lowers_the_loss_and_its_params_run_in_linen(name):
    module, inputs, kwargs, params = linen_setup(name)
    model = nnx_bridge.to_nnx(module, *inputs, params=params, **kwargs)
    labels = inputs[-1]
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    def loss_fn(model):
        logits = model(*inputs, **kwargs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(3)]
    final = float(loss_fn(model))
    assert final < losses[0] and losses[2] < losses[0], (losses, final)
    updated = nnx_bridge.linen_params(model)
    assert not np.array_equal(updated["embed"]["embedding"], params["embed"]["embedding"])
    linen_loss = optax.softmax_cross_entropy_with_integer_labels(
        module.apply({"params": updated}, *inputs, **kwargs), labels
    ).mean()
    assert abs(float(linen_loss) - final) <= 1e-6
    assert_same_outputs(model(*inputs, **kwargs), module.apply({"params": updated}, *inputs, **kwargs))


def test_mismatched_params_name_the_paths_and_shapes():
    module, inputs, kwargs, params = linen_setup("tiny-gpt2")
    flat = traverse_util.flatten_dict(params)
    missing = traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] != "up_kernel"})
    with pytest.raises(
        ValueError, match=r"missing \['decoder/layers_0/mlp/up_kernel', 'decoder/layers_1/mlp/up_kernel'\]"
    ):
        nnx_bridge.to_nnx(module, *inputs, params=missing, **kwargs)
    model = nnx_bridge.to_nnx(module, *inputs, params=params, **kwargs)
    wrong = traverse_util.unflatten_dict({**flat, ("embed", "embedding"): np.zeros((98, 36), np.float32)})
    with pytest.raises(ValueError, match=r"embed/embedding has shape \(98, 36\); the module needs \(99, 36\)"):
        nnx_bridge.load_linen_params(model, wrong)


def test_readme_nnx_snippet_runs_and_prints_what_it_claims():
    code = python_block_after("## Flax NNX")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, "README.md [## Flax NNX]", "exec"), {"__name__": "readme_snippet"})
    claims = printed_claims(code)
    assert len(claims) == 2 and "nnx.Optimizer" in code and "to_nnx" in code
    assert [line.strip() for line in stdout.getvalue().splitlines()] == [c.strip() for c in claims]


def test_dropout_draws_from_the_dropout_stream():
    config = presets.get("tiny-gpt2", dropout_rate=0.5)
    x = floats((B, T, config.d_model))
    block = TransformerBlock(config, deterministic=False)
    params = linen_setup("block")[3]  # the same parameter shapes as the deterministic tiny-gpt2 block
    model = nnx_bridge.to_nnx(block, x, rngs=nnx.Rngs(params=0, dropout=1), params=params, mask=causal_mask(T))
    first, second = model(x, mask=causal_mask(T)), model(x, mask=causal_mask(T))
    assert not np.allclose(first, second)  # a fresh dropout key per call
    keep = TransformerBlock(config).apply({"params": params}, x, mask=causal_mask(T))
    assert not np.allclose(first, keep)
