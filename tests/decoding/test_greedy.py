"""Greedy decoding with the KV cache == argmax of repeated full forward passes without a cache.

The no-cache reference loops and the widened random parameters are in
`decoding_reference.py` (see its docstring for why the init is widened).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.decoding_reference import (
    BOS,
    NEW_TOKENS,
    PROMPTS,
    SOURCES,
    cut_at_eos,
    full_forward,
    greedy_reference,
    model_and_params,
    right_padded,
)

from benchmarks.profile_decode import compiled_generate_text
from benchmarks.profile_step import hlo_computations
from jaxformer import decoding, models
from jaxformer.decoding.steps import Stepper, prefill_decoder_only
from jaxformer.errors import InputError

DECODER_ONLY = [("tiny-gpt2", False), ("tiny-llama", False), ("tiny-llama", True)]
ENCODER_DECODER = [("tiny-transformer", False), ("tiny-t5", False), ("tiny-t5", True)]


def ids(cases):
    return [name + ("-scan" if scan else "") for name, scan in cases]


@pytest.mark.parametrize(("name", "scan"), DECODER_ONLY, ids=ids(DECODER_ONLY))
def test_decoder_only_greedy_matches_full_forward(name, scan):
    config, params = model_and_params(name, scan)
    expected = greedy_reference(name, scan)  # [B, N] from the no-cache loop
    got = decoding.generate(config, params, [list(p) for p in PROMPTS], max_new_tokens=NEW_TOKENS)
    np.testing.assert_array_equal(got, expected)
    # The same prompts as a right-padded array + lengths give the same tokens.
    tokens, _ = right_padded(PROMPTS)
    again = decoding.generate(config, params, tokens, [len(p) for p in PROMPTS], max_new_tokens=NEW_TOKENS)
    np.testing.assert_array_equal(again, expected)


@pytest.mark.parametrize(("name", "scan"), ENCODER_DECODER, ids=ids(ENCODER_DECODER))
def test_encoder_decoder_greedy_matches_full_forward(name, scan):
    config, params = model_and_params(name, scan)
    expected = greedy_reference(name, scan)
    source, valid = right_padded(SOURCES)
    got = decoding.translate(config, params, source, valid, bos_id=BOS, max_new_tokens=NEW_TOKENS)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-transformer"])
def test_tokens_after_eos_are_pad(name):
    config, params = model_and_params(name)
    expected = greedy_reference(name)
    eos = int(expected[0, 2])  # a token that row 0 produces at step 2
    want = np.array([cut_at_eos(row, eos, pad=0) for row in expected])
    assert want[0, 3:].tolist() == [0] * (NEW_TOKENS - 3)
    if config.family == "decoder_only":
        got = decoding.generate(config, params, PROMPTS, max_new_tokens=NEW_TOKENS, eos_id=eos, pad_id=0)
    else:
        source, valid = right_padded(SOURCES)
        got = decoding.translate(config, params, source, valid, bos_id=BOS, eos_id=eos, max_new_tokens=NEW_TOKENS)
    np.testing.assert_array_equal(got, want)


def test_cached_step_logits_match_full_forward():
    """Prefill a left-padded batch, then feed one token per row at a time: logits == full forward (1e-4)."""
    config, params = model_and_params("tiny-llama")
    tokens, valid = decoding.pack_prompts(PROMPTS)
    positions = decoding.positions_from_valid(valid)
    fed_tokens = np.array([[4, 23, 61], [40, 3, 61], [77, 9, 61]], np.int32)  # [B, 3] tokens fed after the prompt
    width = tokens.shape[1] + fed_tokens.shape[1]
    cache = decoding.init_cache(config, len(PROMPTS), width)
    model = models.build(config, decode=True)
    prefill = jax.jit(
        lambda variables: model.apply(variables, tokens, positions=positions, valid=valid, mutable=["cache"])
    )
    cache = prefill({"params": params, "cache": cache})[1]["cache"]
    step = jax.jit(Stepper(config).__call__)
    next_positions = positions[:, -1] + 1  # [B]: the prompt lengths
    for i in range(fed_tokens.shape[1]):
        logits, cache = step(params, cache, jnp.asarray(fed_tokens[:, i]), jnp.asarray(next_positions + i))
        sequences = [list(prompt) + fed_tokens[row, : i + 1].tolist() for row, prompt in enumerate(PROMPTS)]
        full = np.asarray(full_forward(config)({"params": params}, right_padded(sequences, width)[0]))
        for row, sequence in enumerate(sequences):  # full-forward logits at each row's last real token
            np.testing.assert_allclose(np.asarray(logits[row]), full[row, len(sequence) - 1], atol=1e-4, rtol=1e-4)


def loop_body_lines(hlo_text: str) -> list[str]:
    """The instructions of every while-loop body in compiled HLO text, with the computations they call."""
    computations = hlo_computations(hlo_text)
    pending = re.findall(r"body=%([\w.\-]+)", hlo_text)
    seen: set[str] = set()
    while pending:
        current = pending.pop()
        if current not in seen and current in computations:
            seen.add(current)
            pending += re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", "\n".join(computations[current]))
    return [line for current in seen for line in computations[current]]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's compiled decoding loop")
def test_decoding_loop_updates_the_kv_cache_in_place_on_cpu():
    """No copy of a layer's [B, K, H, S] cache inside the compiled token loop (one per layer and token, before)."""
    config, params = model_and_params("tiny-gpt2")
    hlo = compiled_generate_text(lambda: decoding.generate(config, params, PROMPTS, max_new_tokens=NEW_TOKENS))
    cache = decoding.init_cache(config, len(PROMPTS), 1)
    keys = [
        leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache) if "cached_key" in jax.tree_util.keystr(path)
    ]
    kv_heads, head_dim = keys[0].shape[1:3]  # [B, K, H, S]
    cache_shape = rf"f32\[{len(PROMPTS)},{kv_heads},{head_dim},\d+\]\{{[\d,]+\}}"
    body = loop_body_lines(hlo)
    assert any(re.search(rf"= {cache_shape} fusion\(", line) for line in body), "no cache update found in the loop"
    assert [line for line in body if re.search(rf"= {cache_shape} copy\(", line)] == []


@pytest.mark.parametrize("keep", [1, 3])
def test_logits_to_keep_gives_the_last_positions_logits(keep):
    """`logits_to_keep=n` (transformers' name) == the last n positions of the full logits, with and without the cache."""
    config, params = model_and_params("tiny-llama")
    tokens = jnp.asarray([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]], jnp.int32)
    full = models.build(config).apply({"params": params}, tokens)  # [B, T, V]
    kept = models.build(config).apply({"params": params}, tokens, logits_to_keep=keep)
    assert kept.shape == (2, keep, config.vocab_size)
    np.testing.assert_allclose(kept, full[:, -keep:], rtol=1e-5, atol=1e-5)
    model = models.build(config, decode=True)
    cache = decoding.init_cache(config, 2, tokens.shape[1])
    cached, _ = model.apply({"params": params, "cache": cache}, tokens, logits_to_keep=keep, mutable=["cache"])
    np.testing.assert_allclose(cached, full[:, -keep:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_logits_to_keep_rejects_what_is_not_a_positive_int(bad):
    config, params = model_and_params("tiny-gpt2")
    with pytest.raises(InputError, match="logits_to_keep must be a positive int"):
        models.build(config).apply({"params": params}, jnp.ones((1, 4), jnp.int32), logits_to_keep=bad)


def test_prefill_applies_the_lm_head_to_the_last_position_only():
    """The prefill's compiled program holds no [B, P, V] logits: the head runs on [B, 1, D] (B*P rows before)."""
    config, params = model_and_params("tiny-gpt2")
    tokens, valid = decoding.pack_prompts(PROMPTS)
    positions = decoding.positions_from_valid(valid)
    length = tokens.shape[1] + 2

    def prefill(params, tokens, valid, positions):  # DecodeState is not a pytree: return its arrays
        state = prefill_decoder_only(config, params, tokens, valid, positions, length)
        return state.logits, state.cache

    compiled = jax.jit(prefill).lower(params, tokens, valid, positions).compile()
    hlo = compiled.as_text()
    vocab = config.vocab_size
    rows = [
        int(np.prod([int(d) for d in dims.split(",") if d])) for dims in re.findall(rf"f32\[([\d,]*),{vocab}\]", hlo)
    ]
    assert rows, "no [..., V] array in the prefill"
    assert max(rows) == len(PROMPTS), f"logits for {max(rows)} rows computed, {len(PROMPTS)} needed"
    logits, _ = compiled(params, tokens, valid, positions)  # the program checked above, not a second compile
    full = models.build(config).apply({"params": params}, tokens, positions=positions, valid=valid)
    np.testing.assert_allclose(logits, full[:, -1], rtol=1e-4, atol=1e-4)
