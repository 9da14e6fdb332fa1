"""Model-level tests: parameter counts, masking invariances, packing, scan/remat/jit/bf16 equivalences, gradients,
abstract initialisation, logical axes, a golden parameter listing and KV-cache decoding.

To stay fast on a CPU every forward pass runs under one cached `jax.jit` per config, with inputs of the same
structure and shapes wherever a test allows ([2, 7] tokens / sources, [2, 5] targets, optional arrays explicit).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxformer import models, presets
from jaxformer.config import ModelConfig
from jaxformer.layers.axes import PARAM_AXES

ATOL = 1e-5
TINY = ["tiny-gpt2", "tiny-bert", "tiny-t5", "tiny-transformer", "tiny-llama"]
FULL = [name for name in presets.names() if not name.startswith("tiny-")]
DECODERS = ["tiny-gpt2", "tiny-llama"]
SEQ2SEQ = ["tiny-t5", "tiny-transformer"]


@functools.cache
def tiny_params(name: str):
    """Random parameters of a tiny preset, shapes from `models.abstract_params` (no initialiser is run).

    Every tensor is random, biases and norm scales included (scales around 1), so none sits at a trivial value."""
    cfg = presets.get(name)
    flat = traverse_util.flatten_dict(nn.meta.unbox(models.abstract_params(cfg)))
    rng = np.random.default_rng(1)
    params = {}
    for path, leaf in sorted(flat.items()):
        noise = rng.normal(size=leaf.shape).astype(np.float32)
        params[path] = jnp.asarray(1.0 + 0.1 * noise if path[-1] == "scale" else 0.1 * noise)
    return cfg, traverse_util.unflatten_dict(params)


def tokens(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, 99, size=shape), jnp.int32)


@functools.cache
def jitted_apply(cfg: ModelConfig, method: str | None = None):
    """One compiled apply per (config, method); tests share it by passing inputs of the same structure and shapes."""
    model = models.build(cfg)
    return jax.jit(lambda params, inputs: model.apply({"params": params}, **inputs, method=method))


def run(cfg: ModelConfig, params, inputs: dict, method: str | None = None):
    """Apply the model of `cfg` under jit: a dict of outputs for encoders, logits otherwise."""
    return jitted_apply(cfg, method)(params, inputs)


def main_output(cfg: ModelConfig, out):
    """[B, T, ...] per-position output: hidden states of an encoder, logits otherwise."""
    return out["hidden"] if cfg.family == "encoder_only" else out


def explicit(ids, prefix="", valid=None, positions=None, segment_ids=None) -> dict:
    """valid / positions / segment_ids for `ids` [B, L], spelled out when not given (all valid, 0..L-1, one segment):
    equivalent to passing None, but every call then has the same structure and shares one compiled function."""
    valid = jnp.ones(ids.shape, bool) if valid is None else jnp.asarray(valid, bool)
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape) if positions is None else jnp.asarray(positions)
    segment_ids = jnp.ones(ids.shape, jnp.int32) if segment_ids is None else jnp.asarray(segment_ids)
    return {f"{prefix}valid": valid, f"{prefix}positions": positions, f"{prefix}segment_ids": segment_ids}


def family_inputs(cfg: ModelConfig, ids=None, target=None, source_kw=None, target_kw=None) -> dict:
    """tokens [2, 7] (or source [2, 7] and target [2, 5]) with all optional arrays explicit."""
    ids = tokens((2, 7)) if ids is None else ids
    if cfg.family == "encoder_decoder":
        target = tokens((2, 5), seed=1) if target is None else target
        return {
            "source": ids,
            "target": target,
            **explicit(ids, "source_", **(source_kw or {})),
            **explicit(target, "target_", **(target_kw or {})),
        }
    return {"tokens": ids, **explicit(ids, **(source_kw or {}))}


def lengths_to_valid(lengths, total):
    return jnp.arange(total)[None, :] < jnp.asarray(lengths)[:, None]


# 1. Parameter counts ----------------------------------------------------------------------------------------------

PUBLISHED = {
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "bert-base": 109_482_240,  # with pooler, vocab 30,522
    "t5-small": 60_506_624,
    "t5-base": 222_903_552,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_count_matches_published(name):
    assert models.param_count(presets.get(name)) == PUBLISHED[name]


def test_transformer_base_param_count_by_hand():
    """Vaswani et al. base model with one shared 37,000-token table (embeddings and tied output), biases, post-norm."""
    cfg = presets.get("transformer-base")
    d, f, v, layers = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.num_layers
    attention = 4 * (d * d + d)  # Q, K, V, O projections with biases
    ffn = d * f + f + f * d + d
    norm = 2 * d  # LayerNorm scale + bias
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm  # self-attention, cross-attention, MLP
    embedding = v * d  # shared by source, target and the output projection; sinusoidal positions have no params
    by_hand = embedding + layers * encoder_layer + layers * decoder_layer  # post-norm: no final norms
    assert (d, f, v, layers, cfg.decoder_layers) == (512, 2048, 37000, 6, 6)
    assert by_hand == 63_082_496
    assert models.param_count(cfg) == by_hand


# 2. Masking invariances -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-t5"])
def test_causal_future_tokens_do_not_change_past_outputs(name):
    cfg, params = tiny_params(name)
    key = "target" if cfg.family == "encoder_decoder" else "tokens"
    base = family_inputs(cfg)
    a = np.asarray(run(cfg, params, base))
    length = base[key].shape[1]
    for t in range(length - 1):  # change every token after position t
        changed = dict(base, **{key: base[key].at[:, t + 1 :].set(tokens((2, length - t - 1), seed=7 + t))})
        b = np.asarray(run(cfg, params, changed))
        np.testing.assert_allclose(b[:, : t + 1], a[:, : t + 1], atol=ATOL, err_msg=f"t={t}")
        assert np.abs(b[:, t + 1 :] - a[:, t + 1 :]).max() > 1e-4  # later positions do change


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-t5"])  # one per family
def test_more_padding_leaves_real_positions_unchanged(name):
    """Right padding marked by valid=False: outputs at real positions don't depend on how much padding follows.

    Rows hold 7 and 4 real tokens; the same rows are run at length 7 and at length 10."""
    cfg, params = tiny_params(name)
    lengths = [7, 4]
    long_ids = tokens((2, 10), seed=3).at[1, 4:].set(0).at[0, 7:].set(0)
    short_ids = long_ids[:, :7]
    real = np.asarray(lengths_to_valid(lengths, 7))
    if cfg.family == "encoder_decoder":
        short = family_inputs(cfg, short_ids, source_kw={"valid": lengths_to_valid(lengths, 7)})
        long = family_inputs(cfg, long_ids, source_kw={"valid": lengths_to_valid(lengths, 10)})
        np.testing.assert_allclose(np.asarray(run(cfg, params, long)), np.asarray(run(cfg, params, short)), atol=ATOL)
        return
    short = run(cfg, params, family_inputs(cfg, short_ids, source_kw={"valid": lengths_to_valid(lengths, 7)}))
    long = run(cfg, params, family_inputs(cfg, long_ids, source_kw={"valid": lengths_to_valid(lengths, 10)}))
    out_short, out_long = np.asarray(main_output(cfg, short)), np.asarray(main_output(cfg, long))
    assert np.isfinite(out_long).all()
    np.testing.assert_allclose(out_long[:, :7][real], out_short[real], atol=ATOL)
    if isinstance(short, dict) and "pooled" in short:
        np.testing.assert_allclose(np.asarray(long["pooled"]), np.asarray(short["pooled"]), atol=ATOL)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-t5"])
def test_padding_mask_is_effective(name):
    """Guard for the test above: with every token marked valid, the padding tokens do change the real outputs."""
    cfg, params = tiny_params(name)
    ids = tokens((2, 7), seed=3).at[1, 4:].set(0)
    masked = family_inputs(cfg, ids, source_kw={"valid": lengths_to_valid([7, 4], 7)})
    unmasked = family_inputs(cfg, ids)
    a = np.asarray(main_output(cfg, run(cfg, params, masked)))
    b = np.asarray(main_output(cfg, run(cfg, params, unmasked)))
    assert np.abs(a[1] - b[1]).max() > 1e-4


def packed_pair(seed):
    """Two sequences of lengths 3 and 4: packed into one row of 7 (row 0), and each alone, right-padded (rows 0, 1)."""
    first, second = tokens((3,), seed), tokens((4,), seed + 1)
    packed = jnp.stack([jnp.concatenate([first, second]), tokens((7,), seed + 2)])
    segments = jnp.array([[1, 1, 1, 2, 2, 2, 2], [1] * 7])
    positions = jnp.array([[0, 1, 2, 0, 1, 2, 3], list(range(7))])
    alone = jnp.stack([jnp.pad(first, (0, 4)), jnp.pad(second, (0, 3))])
    return packed, {"segment_ids": segments, "positions": positions}, alone, {"valid": lengths_to_valid([3, 4], 7)}


@pytest.mark.parametrize("name", [*DECODERS, "tiny-bert"])
def test_packed_sequences_do_not_see_each_other(name):
    cfg, params = tiny_params(name)
    packed, packed_kw, alone, alone_kw = packed_pair(seed=11)
    out_packed = np.asarray(main_output(cfg, run(cfg, params, family_inputs(cfg, packed, source_kw=packed_kw))))
    out_alone = np.asarray(main_output(cfg, run(cfg, params, family_inputs(cfg, alone, source_kw=alone_kw))))
    np.testing.assert_allclose(out_packed[0, :3], out_alone[0, :3], atol=ATOL)
    np.testing.assert_allclose(out_packed[0, 3:], out_alone[1, :4], atol=ATOL)
    unpacked = np.asarray(main_output(cfg, run(cfg, params, family_inputs(cfg, packed))))
    assert np.abs(unpacked[0, 3:] - out_packed[0, 3:]).max() > 1e-4  # without segment ids the second one differs


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_packed_seq2seq_pairs_do_not_see_each_other(name):
    """Sources of lengths 3 + 4 and targets of lengths 2 + 3 packed in row 0, versus each pair alone."""
    cfg, params = tiny_params(name)
    src_packed, src_packed_kw, src_alone, src_alone_kw = packed_pair(seed=21)
    tgt_1, tgt_2 = tokens((2,), 31), tokens((3,), 32)
    tgt_packed = jnp.stack([jnp.concatenate([tgt_1, tgt_2]), tokens((5,), 33)])
    tgt_packed_kw = {"segment_ids": [[1, 1, 2, 2, 2], [1] * 5], "positions": [[0, 1, 0, 1, 2], list(range(5))]}
    tgt_alone = jnp.stack([jnp.pad(tgt_1, (0, 3)), jnp.pad(tgt_2, (0, 2))])
    packed = run(cfg, params, family_inputs(cfg, src_packed, tgt_packed, src_packed_kw, tgt_packed_kw))
    alone = run(
        cfg, params, family_inputs(cfg, src_alone, tgt_alone, src_alone_kw, {"valid": lengths_to_valid([2, 3], 5)})
    )
    np.testing.assert_allclose(np.asarray(packed[0, :2]), np.asarray(alone[0, :2]), atol=ATOL)
    np.testing.assert_allclose(np.asarray(packed[0, 2:]), np.asarray(alone[1, :3]), atol=ATOL)
    unpacked = run(cfg, params, family_inputs(cfg, src_packed, tgt_packed))
    assert np.abs(np.asarray(unpacked[0, 2:] - packed[0, 2:])).max() > 1e-4  # segment ids do matter


# 3. Equivalences: scan, jit, remat, bfloat16 ----------------------------------------------------------------------


def stack_names(cfg: ModelConfig) -> dict[str, int]:
    if cfg.family == "encoder_decoder":
        return {"encoder": cfg.num_layers, "decoder": cfg.decoder_layers}
    return {"encoder" if cfg.family == "encoder_only" else "decoder": cfg.num_layers}


def to_scanned(cfg: ModelConfig, params):
    """(scanned config, params in the scanned layout) via `models.stack_layer_params`."""
    scanned = dict(params)
    for stack, layers in stack_names(cfg).items():
        scanned[stack] = models.stack_layer_params(params[stack], layers)
    return cfg.replace(scan_layers=True), scanned


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-t5"])  # one per family
def test_scanned_stack_equals_unrolled(name):
    cfg, params = tiny_params(name)
    scanned_cfg, scanned = to_scanned(cfg, params)
    for stack in stack_names(cfg):
        round_trip = models.unstack_layer_params(scanned[stack])
        assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), round_trip, params[stack]))
    # the converted tree has exactly the structure and shapes that a scanned model initialises
    abstract = nn.meta.unbox(models.abstract_params(scanned_cfg))
    assert jax.tree.structure(abstract) == jax.tree.structure(scanned)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape, abstract, scanned))
    inputs = family_inputs(cfg)
    want = np.asarray(main_output(cfg, run(cfg, params, inputs)))
    got = np.asarray(main_output(cfg, run(scanned_cfg, scanned, inputs)))
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_jit_equals_eager():
    cfg, params = tiny_params("tiny-gpt2")
    model = models.build(cfg)
    inputs = {"tokens": family_inputs(cfg)["tokens"]}  # valid, positions, segment_ids left to their defaults
    eager = model.apply({"params": params}, **inputs)
    jitted = jax.jit(lambda p, x: model.apply({"params": p}, **x))(params, inputs)
    np.testing.assert_allclose(np.asarray(main_output(cfg, jitted)), np.asarray(main_output(cfg, eager)), atol=ATOL)
    # the explicit defaults used by the other tests give the same result as leaving them out
    explicit_out = main_output(cfg, run(cfg, params, family_inputs(cfg)))
    np.testing.assert_allclose(np.asarray(explicit_out), np.asarray(main_output(cfg, eager)), atol=ATOL)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-t5"])  # one per family
def test_bfloat16_compute_close_to_float32(name):
    """Metric: max |out_bf16 - out_fp32| / max |out_fp32| over all logits (hidden states for the encoder), with
    float32 parameters of std 0.1 (norm scales 1 +- 0.1). Measured: 0.007 (gpt2), 0.008 (bert), 0.008 (t5)."""
    cfg, params = tiny_params(name)
    inputs = family_inputs(cfg)
    fp32 = np.asarray(main_output(cfg, run(cfg, params, inputs)), np.float64)
    bf16_out = main_output(cfg, run(cfg.replace(dtype="bfloat16"), params, inputs))
    relative = np.abs(np.asarray(bf16_out.astype(jnp.float32)) - fp32).max() / np.abs(fp32).max()
    assert relative < 2e-2, relative
    assert relative > 1e-5  # bf16 compute really happened (float32 would agree to ~1e-7)


def masked_inputs(cfg: ModelConfig) -> dict:
    """Standard inputs with packing and a trailing padding slot (segment 0, valid False), so that fully masked
    rows and keys take part in the backward pass."""
    segments = [[1, 1, 2, 2, 2, 0, 0], [1] * 7]
    kw = {"segment_ids": segments, "valid": np.asarray(segments) > 0}
    target_kw = {"segment_ids": [[1, 1, 2, 2, 0], [1] * 5], "valid": [[1, 1, 1, 1, 0], [1] * 5]}
    return family_inputs(cfg, source_kw=kw, target_kw=target_kw)


@functools.cache
def jitted_loss_and_grad(cfg: ModelConfig):
    model = models.build(cfg)

    def loss(params, inputs):
        out = model.apply({"params": params}, **inputs)
        if cfg.family == "encoder_only":
            return sum(jnp.mean(jnp.sin(3.0 * o)) for o in out.values())
        labels = jax.nn.one_hot(jnp.arange(out.shape[1]) % out.shape[-1], out.shape[-1])
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(out), -1))

    return jax.jit(jax.value_and_grad(loss))


SCANNED_FOR_GRADIENTS = ("tiny-llama", "tiny-transformer")  # deeper stacks: scanned layout compiles faster


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_under_jit_has_finite_gradients(name):
    cfg, params = tiny_params(name)
    if name in SCANNED_FOR_GRADIENTS:
        cfg, params = to_scanned(cfg, params)
    value, grads = jitted_loss_and_grad(cfg)(params, masked_inputs(cfg))
    assert np.isfinite(float(value))
    flat = traverse_util.flatten_dict(grads, sep="/")
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    not_finite = [path for path, g in flat.items() if not np.isfinite(np.asarray(g)).all()]
    assert not not_finite, not_finite
    unused = [path for path, g in flat.items() if not np.any(np.asarray(g))]
    assert not unused, f"parameters with an all-zero gradient: {unused}"


@pytest.mark.parametrize(
    ("name", "scan", "policies"), [("tiny-gpt2", False, ("full",)), ("tiny-llama", True, ("dots",))]
)
def test_remat_policies_match_no_remat(name, scan, policies):
    cfg, params = tiny_params(name)
    if scan:
        cfg, params = to_scanned(cfg, params)
    inputs = masked_inputs(cfg)
    want_value, want_grads = jitted_loss_and_grad(cfg)(params, inputs)
    for policy in policies:
        value, grads = jitted_loss_and_grad(cfg.replace(remat_policy=policy))(params, inputs)
        np.testing.assert_allclose(float(value), float(want_value), atol=ATOL, err_msg=policy)
        for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=ATOL, err_msg=policy)


# 4. Structure: abstract init, logical axes, golden tree -----------------------------------------------------------


def boxed_leaves(tree):
    return jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


@functools.cache
def abstract_tree(name: str, scan: bool = False):
    return models.abstract_params(presets.get(name, scan_layers=scan))


@pytest.mark.parametrize("name", FULL)
def test_full_size_preset_initialises_abstractly(name):
    leaves = [leaf.value for leaf in boxed_leaves(abstract_tree(name))]
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)  # shapes only, nothing allocated
    assert sum(int(np.prod(leaf.shape)) for leaf in leaves) > 40_000_000


@pytest.mark.parametrize(
    ("name", "scan"), [(name, False) for name in presets.names()] + [(name, True) for name in TINY]
)
def test_every_parameter_has_known_logical_axes(name, scan):
    leaves = boxed_leaves(abstract_tree(name, scan))
    assert leaves
    for leaf in leaves:
        assert isinstance(leaf, nn.Partitioned), f"parameter without logical axes: {leaf}"
        assert len(leaf.names) == len(leaf.value.shape), leaf
        assert all(axis in PARAM_AXES for axis in leaf.names), leaf.names
    assert any("layers" in leaf.names for leaf in leaves) == scan


def test_tiny_gpt2_parameter_tree_golden():
    per_layer = {
        "mlp/down_bias": (36,),
        "mlp/down_kernel": (37, 36),
        "mlp/up_bias": (37,),
        "mlp/up_kernel": (36, 37),
        "mlp_norm/bias": (36,),
        "mlp_norm/scale": (36,),
        "self_attention/key_bias": (4, 9),
        "self_attention/key_kernel": (36, 4, 9),
        "self_attention/out_bias": (36,),
        "self_attention/out_kernel": (4, 9, 36),
        "self_attention/query_bias": (4, 9),
        "self_attention/query_kernel": (36, 4, 9),
        "self_attention/value_bias": (4, 9),
        "self_attention/value_kernel": (36, 4, 9),
        "self_attention_norm/bias": (36,),
        "self_attention_norm/scale": (36,),
    }
    expected = {
        "decoder/final_norm/bias": (36,),
        "decoder/final_norm/scale": (36,),
        "embed/embedding": (99, 36),
        "embedding/positions/embedding": (64, 36),
    }
    for layer in (0, 1):
        expected.update({f"decoder/layers_{layer}/{path}": shape for path, shape in per_layer.items()})
    flat = traverse_util.flatten_dict(nn.meta.unbox(models.abstract_params(presets.get("tiny-gpt2"))), sep="/")
    assert {path: tuple(leaf.shape) for path, leaf in flat.items()} == expected
    assert models.param_count(presets.get("tiny-gpt2")) == sum(int(np.prod(s)) for s in expected.values())


# 5. KV-cache decoding equals the full forward pass ----------------------------------------------------------------


def empty_cache(model, *args, **kwargs):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@pytest.mark.parametrize(("name", "scan"), [("tiny-gpt2", True)])
def test_cached_decoding_equals_full_forward_decoder(name, scan):
    """A 2-token prompt then single tokens, positions left to their defaults, against one forward pass."""
    cfg, params = tiny_params(name)
    if scan:
        cfg, params = to_scanned(cfg, params)
    ids = tokens((2, 7), seed=5)
    full = run(cfg, params, family_inputs(cfg, ids))
    model = models.build(cfg, decode=True)
    step = jax.jit(lambda p, cache, x: model.apply({"params": p, "cache": cache}, x, mutable=["cache"]))
    cache = empty_cache(model, ids)
    outputs = []
    for start, stop in ((0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)):
        logits, state = step(params, cache, ids[:, start:stop])
        cache = state["cache"]
        outputs.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outputs, axis=1)), np.asarray(full), atol=ATOL)


@pytest.mark.parametrize("name", ["tiny-t5"])  # relative-position bias over cached keys
def test_cached_decoding_equals_full_forward_seq2seq(name):
    """Target tokens one at a time (cross-attention keys cached at the first step) against one forward pass."""
    cfg, params = tiny_params(name)
    source_valid = lengths_to_valid([7, 4], 7)
    inputs = family_inputs(cfg, source_kw={"valid": source_valid})
    full = run(cfg, params, inputs)
    encoded = run(cfg, params, {k: v for k, v in inputs.items() if k.startswith("source")}, method="encode")
    model = models.build(cfg, decode=True)
    cache = empty_cache(model, inputs["source"], inputs["target"], source_valid=source_valid)

    def step(params, cache, target, encoded):
        return model.apply(
            {"params": params, "cache": cache}, target, encoded, source_valid, method="decode_step", mutable=["cache"]
        )

    first, later = jax.jit(step), jax.jit(lambda p, c, t: step(p, c, t, None))
    outputs = []
    for t in range(5):
        target = inputs["target"][:, t : t + 1]
        logits, state = first(params, cache, target, encoded) if t == 0 else later(params, cache, target)
        cache = state["cache"]
        outputs.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outputs, axis=1)), np.asarray(full), atol=ATOL)
