"""Beam search: beam size 1 == greedy; every returned score == its re-scored log-probability from a
full forward pass (no cache) divided by the GNMT penalty ((5 + len) / 6) ** alpha; cache layouts."""

from __future__ import annotations

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
    greedy_reference,
    model_and_params,
    right_padded,
    sequence_log_prob,
)

from jaxformer import decoding, presets

WIDTH = 3
ALPHA = 0.6


def run_beam(config, params, beam_size, alpha, eos_id):
    if config.family == "decoder_only":
        return decoding.beam_search(
            config, params, PROMPTS, max_new_tokens=NEW_TOKENS, beam_size=beam_size, alpha=alpha, eos_id=eos_id
        )
    source, valid = right_padded(SOURCES)
    return decoding.beam_search(
        config,
        params,
        source,
        source_valid=valid,
        bos_id=BOS,
        max_new_tokens=NEW_TOKENS,
        beam_size=beam_size,
        alpha=alpha,
        eos_id=eos_id,
    )


@pytest.mark.parametrize(("name", "scan"), [("tiny-gpt2", False), ("tiny-t5", True)], ids=["tiny-gpt2", "tiny-t5-scan"])
def test_beam_size_one_equals_greedy(name, scan):
    config, params = model_and_params(name, scan)
    greedy = greedy_reference(name, scan)  # no-cache argmax loop
    # Without EOS every hypothesis has the same length, so the penalty does not change the ranking.
    result = run_beam(config, params, beam_size=1, alpha=ALPHA, eos_id=None)
    np.testing.assert_array_equal(result.sequences[:, 0], greedy)
    # With EOS, beam search also keeps EOS-ended runners-up (from its 2W candidates) that greedy never
    # takes, so W=1 returns the greedy path cut at EOS or a hypothesis that scores at least as well.
    eos = int(greedy[0, 2])
    result = run_beam(config, params, beam_size=1, alpha=0.0, eos_id=eos)
    greedy_cut = [cut_at_eos(row, eos) for row in greedy]
    contexts = PROMPTS if config.family == "decoder_only" else SOURCES
    greedy_pairs = [
        (c, row[: row.index(eos) + 1] if eos in row else row) for c, row in zip(contexts, greedy_cut, strict=True)
    ]
    greedy_scores = sequence_log_prob(config, params, greedy_pairs)  # alpha = 0: score = log-prob
    for row in range(len(contexts)):
        assert result.scores[row, 0] >= greedy_scores[row] - 1e-5
        if np.isclose(result.scores[row, 0], greedy_scores[row], atol=1e-5):
            assert result.sequences[row, 0].tolist() == greedy_cut[row]


CASES = [("tiny-gpt2", False), ("tiny-llama", True), ("tiny-t5", True)]  # learned / rotary+GQA / relative


@pytest.mark.parametrize(("name", "scan"), CASES, ids=[n + ("-scan" if s else "") for n, s in CASES])
def test_beam_scores_equal_rescored_log_probs(name, scan):
    config, params = model_and_params(name, scan)
    eos = int(greedy_reference(name, scan)[0, 1])
    result = run_beam(config, params, beam_size=WIDTH, alpha=ALPHA, eos_id=eos)
    assert result.sequences.shape == (3, WIDTH, NEW_TOKENS) and result.scores.shape == (3, WIDTH)
    assert (result.lengths < NEW_TOKENS).any(), "no hypothesis ended with EOS: the EOS path is untested"
    contexts = PROMPTS if config.family == "decoder_only" else SOURCES
    hypotheses = {}  # (row, w) -> generated tokens up to and including EOS
    for row in range(len(contexts)):
        for w in range(WIDTH):
            length = result.lengths[row, w]
            hypothesis = result.sequences[row, w, :length].tolist()
            assert eos not in hypothesis[:-1], "a hypothesis continued past EOS"
            assert length == NEW_TOKENS or hypothesis[-1] == eos
            assert result.sequences[row, w, length:].tolist() == [0] * (NEW_TOKENS - length)
            hypotheses[row, w] = hypothesis
        assert np.all(np.diff(result.scores[row]) <= 0), "beams are not sorted best first"
        assert len({tuple(hypotheses[row, w]) for w in range(WIDTH)}) == WIDTH, "duplicate hypotheses"
    log_probs = sequence_log_prob(config, params, [(contexts[row], h) for (row, _), h in hypotheses.items()])
    penalty = ((5.0 + result.lengths.reshape(-1)) / 6.0) ** ALPHA  # GNMT, eq. 14
    np.testing.assert_allclose(result.scores.reshape(-1), log_probs / penalty, atol=1e-4, rtol=1e-5)


def test_generate_and_translate_beam_return_best_hypothesis():
    config, params = model_and_params("tiny-gpt2")
    best = run_beam(config, params, beam_size=WIDTH, alpha=ALPHA, eos_id=None).sequences[:, 0]
    got = decoding.generate(config, params, PROMPTS, max_new_tokens=NEW_TOKENS, method="beam", beam_size=WIDTH)
    np.testing.assert_array_equal(got, best)


def test_length_penalty_formula():
    np.testing.assert_allclose(decoding.length_penalty(np.array([1.0, 7.0]), 0.6), [1.0, 2.0**0.6])
    assert decoding.length_penalty(12.0, 0.0) == 1.0


def test_cache_batch_axes_for_both_layer_layouts():
    """Batch is axis 0 unrolled and axis 1 for scanned layers ([L, B, ...]); indices are never gathered."""
    for scan in (False, True):
        config = presets.get("tiny-t5", scan_layers=scan)
        axes = decoding.cache_batch_axes(config, cache_length=5, source_length=4)
        flat = {jax.tree_util.keystr(path): axis for path, axis in jax.tree_util.tree_leaves_with_path(axes)}
        layer = "['layers']" if scan else "['layers_0']"
        assert flat[f"['decoder']{layer}['self_attention']['cached_key']"] == (1 if scan else 0)
        assert flat[f"['decoder']{layer}['cross_attention']['cross_value']"] == (1 if scan else 0)
        assert flat[f"['decoder']{layer}['self_attention']['cache_index']"] == -1
        assert flat["['decoder']['key_positions']"] == 0  # stack level: no layers axis even when scanned
        assert flat["['decoder']['position_index']"] == -1


def test_gather_cache_moves_rows_along_the_batch_axis():
    config = presets.get("tiny-llama", scan_layers=True)
    axes = decoding.cache_batch_axes(config, cache_length=4)
    cache = decoding.init_cache(config, batch=3, cache_length=4)
    cache = jax.tree.map(
        lambda x, axis: (
            x
            if axis < 0
            else np.moveaxis(
                np.broadcast_to(np.arange(3).reshape(3, *[1] * (x.ndim - 1)), np.moveaxis(x, axis, 0).shape), 0, axis
            ).astype(x.dtype)
        ),
        cache,
        axes,
    )
    gathered = decoding.gather_cache(cache, axes, np.array([2, 2, 0]))
    key = gathered["decoder"]["layers"]["self_attention"]["cached_key"]  # [L, B, S, K, H]
    assert key.shape[:2] == (config.num_layers, 3)
    np.testing.assert_array_equal(np.asarray(key[:, :, 0, 0, 0]), [[2, 2, 0]] * config.num_layers)


@pytest.mark.parametrize("scan", [False, True])
def test_gather_beams_leaves_the_cross_attention_cache_in_place(scan):
    """Self-attention entries follow their parents; cross-attention keys/values (equal across one entry's beams)
    are not copied, and the result equals a full `gather_cache` on a beam-repeated cache."""
    config = presets.get("tiny-t5", scan_layers=scan)
    axes = decoding.cache_batch_axes(config, cache_length=5, source_length=4)
    rng = np.random.default_rng(0)
    cache = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), decoding.init_cache(config, 2, 5, 4))
    beams = decoding.repeat_cache(cache, axes, 3)  # 2 entries x 3 beams; row b * 3 + w copies row b
    # decoding makes the beams' self-attention entries differ; the cross-attention ones stay copies
    beams = jax.tree_util.tree_map_with_path(
        lambda path, x: x if "cross_" in jax.tree_util.keystr(path) else rng.standard_normal(x.shape).astype(x.dtype),
        beams,
    )
    parents = jnp.array([2, 0, 0, 4, 5, 3])  # each parent lies within its entry's rows
    reordered = decoding.gather_beams(beams, axes, parents)
    full = decoding.gather_cache(beams, axes, parents)
    for path, leaf in jax.tree_util.tree_leaves_with_path(reordered):
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(full_leaf := _at(full, path)))
        if jax.tree_util.keystr(path).endswith("['cross_key']"):
            assert leaf is _at(beams, path)  # left in place, not copied
        elif jax.tree_util.keystr(path).endswith("['cached_key']"):
            assert not np.array_equal(np.asarray(full_leaf), np.asarray(_at(beams, path)))


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


@pytest.mark.parametrize(
    ("name", "scan"),
    [(n, s) if n == "tiny-gpt2" else pytest.param(n, s, marks=pytest.mark.slow) for n, s in CASES],  # ~10 s each
    ids=[n + ("-scan" if s else "") for n, s in CASES],
)
def test_cache_stages_change_no_result(name, scan, monkeypatch):
    """The beam loop runs in stages of growing cache length; with stages of 2, 4, 8... new tokens the
    hypotheses, scores and lengths are those of one full-length loop (checked above against rescoring)."""
    from jaxformer.decoding import beam

    config, params = model_and_params(name, scan)
    eos = int(greedy_reference(name, scan)[0, 1])
    assert beam.slot_stages(1, NEW_TOKENS) == [NEW_TOKENS]  # the default: one stage at this length
    whole = run_beam(config, params, beam_size=WIDTH, alpha=ALPHA, eos_id=eos)
    monkeypatch.setattr(beam, "FIRST_STAGE_ROOM", 2)
    assert len(beam.slot_stages(1, NEW_TOKENS)) >= 3
    jax.clear_caches()  # retrace the beam jit with the new stages
    staged = run_beam(config, params, beam_size=WIDTH, alpha=ALPHA, eos_id=eos)
    jax.clear_caches()
    np.testing.assert_array_equal(staged.sequences, whole.sequences)
    np.testing.assert_array_equal(staged.lengths, whole.lengths)
    np.testing.assert_allclose(staged.scores, whole.scores, rtol=1e-6, atol=1e-6)


def test_slot_stages_double_the_room_up_to_the_cache_length(monkeypatch):
    from jaxformer.decoding import beam

    assert beam.slot_stages(1, 128) == [33, 65, 128]
    assert beam.slot_stages(16, 143) == [48, 80, 143]
    assert beam.slot_stages(1, 20) == [20]
    monkeypatch.setattr(beam, "FIRST_STAGE_ROOM", 2)
    assert beam.slot_stages(5, 9) == [7, 9]
