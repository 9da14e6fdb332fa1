"""Sampling: top-k = 1 (and a tiny nucleus) == greedy, seeded reproducibility, and the filtered
distribution against a NumPy reference of temperature / top-k / top-p."""

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
    greedy_reference,
    model_and_params,
    right_padded,
)

from jaxformer import decoding
from jaxformer.decoding import sampling
from jaxformer.decoding.sampling import greedy_tokens, largest_k, sample_logits


def decode(name, **options):
    config, params = model_and_params(name)
    if config.family == "decoder_only":
        return decoding.generate(config, params, PROMPTS, max_new_tokens=NEW_TOKENS, method="sample", **options)
    source, valid = right_padded(SOURCES)
    return decoding.translate(
        config, params, source, valid, bos_id=BOS, max_new_tokens=NEW_TOKENS, method="sample", **options
    )


@pytest.mark.parametrize("name", ["tiny-gpt2", pytest.param("tiny-transformer", marks=pytest.mark.slow)])
def test_top_k_one_and_tiny_nucleus_equal_greedy(name):
    greedy = greedy_reference(name)  # no-cache argmax loop
    np.testing.assert_array_equal(decode(name, top_k=1, temperature=0.7, seed=3), greedy)
    np.testing.assert_array_equal(decode(name, top_p=1e-6, seed=4), greedy)


def test_sampling_is_reproducible_and_seed_dependent():
    first = decode("tiny-llama", temperature=1.5, top_k=20, top_p=0.95, seed=11)
    again = decode("tiny-llama", temperature=1.5, top_k=20, top_p=0.95, seed=11)
    other = decode("tiny-llama", temperature=1.5, top_k=20, top_p=0.95, seed=12)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other), "different seeds gave identical samples"
    assert first.min() >= 0 and first.max() < 99


def numpy_filtered_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Reference: softmax(logits / T) restricted to the top-k tokens, then to the smallest most likely
    prefix whose mass (after top-k renormalisation) reaches top_p, and every token tied with its last
    one; renormalised."""
    scaled = np.asarray(logits, np.float64) / temperature
    keep = np.ones_like(scaled, bool)
    if top_k:
        keep &= scaled >= np.sort(scaled)[-top_k]
    probs = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    prefix = order[: int(np.searchsorted(cumulative, top_p - 1e-12)) + 1]
    nucleus = probs >= probs[prefix].min()
    out = np.zeros_like(probs)
    out[nucleus] = probs[nucleus]
    return out / out.sum()


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.5, 4, 1.0), (2.0, 0, 0.7), (1.3, 5, 0.8)]
)
def test_sampled_frequencies_match_filtered_softmax(temperature, top_k, top_p):
    logits = jnp.asarray([[1.5, 0.2, -0.4, 2.1, 0.9, -1.3, 0.0, 1.1]], jnp.float32)  # [1, V=8]
    draws = 20000
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    sample = jax.jit(jax.vmap(lambda k: sample_logits(logits, k, temperature, top_k, jnp.float32(top_p), top_p < 1)))
    tokens = np.asarray(sample(keys))[:, 0]
    frequencies = np.bincount(tokens, minlength=8) / draws
    want = numpy_filtered_probs(np.asarray(logits[0]), temperature, top_k, top_p)
    assert np.all(frequencies[want == 0] == 0), "a filtered-out token was sampled"
    np.testing.assert_allclose(frequencies, want, atol=0.015)  # ~4 standard errors at 20k draws


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "fast"),
    [(1.0, 5, 0.95, True), (0.7, 0, 0.6, True), (1.0, 40, 0.9, True), (3.0, 0, 0.99, False), (1.0, 300, 0.999, False)],
)
def test_sampling_a_large_vocabulary_matches_filtered_softmax(temperature, top_k, top_p, fast):
    """V = 2000 > the candidates `sample_logits` looks at first: the draw among them (fast) or over the whole
    row (a wide nucleus, or top-k ties through the last candidate) has the filtered softmax's frequencies."""
    rng = np.random.default_rng(7)
    logits = (3.0 * rng.standard_normal((1, 2000))).astype(np.float32)
    if top_k == 300:
        # ties through the 600th candidate, the last one `sample_logits` looks at for top-k 300
        logits[0, np.argsort(-logits[0])[250:700]] = np.sort(logits[0])[::-1][250]
    scaled = jnp.asarray(logits) / temperature
    use_top_p = top_p < 1
    count = max(sampling.CANDIDATES, 2 * top_k)
    _, exact = sampling._sample_candidates(scaled, jax.random.PRNGKey(0), top_k, jnp.float32(top_p), use_top_p, count)
    assert bool(exact[0]) == fast
    draws = 20000
    keys = jax.random.split(jax.random.PRNGKey(1), draws)
    sample = jax.jit(jax.vmap(lambda k: sample_logits(jnp.asarray(logits), k, temperature, top_k, top_p, use_top_p)))
    tokens = np.asarray(sample(keys))[:, 0]
    want = numpy_filtered_probs(logits[0], temperature, top_k, top_p)
    frequencies = np.bincount(tokens, minlength=2000) / draws
    assert np.all(frequencies[want == 0] == 0), "a filtered-out token was sampled"
    np.testing.assert_allclose(frequencies, want, atol=0.015)


def test_top_k_and_top_p_masks_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 11)).astype(np.float32)
    for k in (1, 3, 11):
        masked = np.asarray(decoding.apply_top_k(jnp.asarray(logits), k))
        for row in range(4):
            kept = np.flatnonzero(np.isfinite(masked[row]))
            np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-logits[row])[:k]))
    for p in (0.1, 0.5, 0.9, 1.0):
        masked = np.asarray(decoding.apply_top_p(jnp.asarray(logits), jnp.float32(p)))
        for row in range(4):
            want = numpy_filtered_probs(logits[row], 1.0, 0, p) > 0
            np.testing.assert_array_equal(np.isfinite(masked[row]), want)


def test_greedy_tokens_equal_numpy_argmax_with_ties_and_nan():
    """The two-reduction argmax picks what np.argmax picks: the lowest id among tied maxima, the first NaN."""
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, size=(64, 1000)).astype(np.float32)  # many ties at the maximum
    logits[5, 17] = np.nan
    logits[5, 900] = np.nan
    logits[6] = -np.inf
    logits[7, :] = 2.0
    got = np.asarray(greedy_tokens(logits))
    np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))
    assert got[5] == 17 and got[6] == 0 and got[7] == 0


@pytest.mark.parametrize(
    ("rows", "size", "k", "block"),
    [(3, 1000, 8, 128), (4, 32000, 8, 128), (2, 300, 5, 16), (2, 50, 8, 16), (3, 129, 1, 128)],
)
def test_largest_k_equals_lax_top_k_with_ties(rows, size, k, block):
    """Values and indices equal `jax.lax.top_k`'s (lower index first among equal values), also for rows of
    few distinct values, -inf entries, a size that blocks do not tile, and more wanted entries than blocks."""
    rng = np.random.default_rng(size + k)
    continuous = rng.standard_normal((rows, size)).astype(np.float32)
    coarse = rng.integers(0, 3, (rows, size)).astype(np.float32)  # many ties
    coarse[0, : size // 2] = -np.inf
    coarse[-1] = -np.inf  # a row of nothing but -inf
    for values in (continuous, coarse):
        expected_values, expected_ids = jax.lax.top_k(jnp.asarray(values), k)
        got_values, got_ids = jax.jit(lambda v: largest_k(v, k, block))(jnp.asarray(values))
        np.testing.assert_array_equal(np.asarray(got_values), np.asarray(expected_values))
        np.testing.assert_array_equal(np.asarray(got_ids), np.asarray(expected_ids))


def test_largest_k_prefers_lower_indices_across_blocks():
    """A later block with a larger maximum must not put its tied entries before an earlier block's."""
    values = jnp.array([[1.0, 1.0, 5.0, 1.0, 0.0, 0.0]])  # blocks of 2: [1, 1] [5, 1] [0, 0]
    got_values, got_ids = largest_k(values, 2, block=2)  # 2 of 3 blocks: the two-stage path
    np.testing.assert_array_equal(np.asarray(got_ids), [[2, 0]])  # as jax.lax.top_k: 5, then the first 1
    np.testing.assert_array_equal(np.asarray(jax.lax.top_k(values, 2)[1]), [[2, 0]])
    np.testing.assert_array_equal(np.asarray(got_values), [[5.0, 1.0]])


def test_order_keys_sort_like_the_floats():
    """uint32 keys order as the float values do: negatives reversed, -0.0 == +0.0, infinities at the ends.
    (Subnormals are left out: XLA:CPU flushes them to zero, so they compare equal to 0 there.)"""
    tiny = np.finfo(np.float32).tiny  # smallest normal
    values = np.array(
        [np.inf, 3.5, 1.0, tiny, 0.0, -0.0, -tiny, -1.0, -1.0000001, -3.0e38, -np.inf, 2e-38, -2e-38], np.float32
    )
    keys = np.asarray(sampling.order_keys(jnp.asarray(values))).astype(np.int64)
    for i in range(len(values)):
        for j in range(len(values)):
            assert (keys[i] < keys[j]) == (values[i] < values[j]), (values[i], values[j])
            assert (keys[i] == keys[j]) == (values[i] == values[j]), (values[i], values[j])


def test_top_p_nucleus_matches_numpy_on_wide_rows_with_ties_and_masked_entries():
    """The sort-free nucleus (a halving search over the mass above a cut-off key) keeps what the sorted
    cumulative mass keeps: rows of 3000 logits of both signs, a tie across the cut-off (all kept), -inf
    entries (as top-k leaves them), p = 1 and a p below the largest probability."""
    rng = np.random.default_rng(3)
    logits = (2.0 * rng.standard_normal((4, 3000))).astype(np.float32) - 1.0
    logits[1, rng.permutation(3000)[:2000]] = -np.inf
    order = np.argsort(-logits[2])
    logits[2, order[40:60]] = logits[2, order[40]]  # 20 tied values
    logits[3] = np.round(logits[3])  # few distinct values: ties everywhere
    for p in (1e-4, 0.3, 0.5, 0.9, 0.999, 1.0):
        masked = np.asarray(jax.jit(sampling.apply_top_p)(jnp.asarray(logits), jnp.float32(p)))
        for row in range(4):
            want = numpy_filtered_probs(logits[row], 1.0, 0, p) > 0
            np.testing.assert_array_equal(np.isfinite(masked[row]), want, err_msg=f"p={p} row={row}")
            np.testing.assert_array_equal(masked[row][want], logits[row][want])
    # a p whose sorted prefix ends inside the 20-way tie: the whole tie is kept, nothing after it
    probs = np.exp(logits[2].astype(np.float64) - logits[2].max())
    probs /= probs.sum()
    p_inside_tie = probs[order[:40]].sum() + 0.5 * probs[order[40:60]].sum()
    kept = np.isfinite(np.asarray(sampling.apply_top_p(jnp.asarray(logits[2:3]), jnp.float32(p_inside_tie)))[0])
    assert kept[order[:60]].all() and not kept[order[60:]].any(), "the cut-off split the tie or kept more"


def test_draw_tokens_frequencies_match_softmax_and_skip_zero_probability():
    """The inverse-CDF draw over blocks: frequencies = softmax within 5 standard errors, for a row whose size
    blocks do not tile, with a whole block and scattered ids at -inf (never drawn), and for one-token rows."""
    rng = np.random.default_rng(5)
    logits = (1.5 * rng.standard_normal((2, 1000))).astype(np.float32)
    logits[0, 128:256] = -np.inf  # a whole block of mass 0
    logits[0, rng.permutation(1000)[:300]] = -np.inf
    logits[0, 999] = 6.0  # the last id (in the padded last block) is the most likely
    logits[1, :] = -np.inf
    logits[1, 517] = 0.0  # one possible token
    draws = 40000
    keys = jax.random.split(jax.random.PRNGKey(2), draws)
    tokens = np.asarray(jax.jit(jax.vmap(lambda k: sampling.draw_tokens(k, jnp.asarray(logits))))(keys))  # [draws, 2]
    assert (tokens[:, 1] == 517).all()
    probs = np.exp(logits[0].astype(np.float64) - logits[0].max())
    probs /= probs.sum()
    frequencies = np.bincount(tokens[:, 0], minlength=1000) / draws
    assert np.all(frequencies[probs == 0] == 0), "a token of probability 0 was drawn"
    allowed = 5 * np.sqrt(probs * (1 - probs) / draws) + 1e-4  # 5 standard errors per token (seeded draws)
    worst = np.argmax(np.abs(frequencies - probs) / allowed)
    assert np.all(np.abs(frequencies - probs) <= allowed), (worst, frequencies[worst], probs[worst])


def test_first_exceeding_clamps_to_the_last_token_of_positive_mass():
    """Where rounding puts the target at or past the row's cumulative mass, the draw is the last token of
    positive probability, not a masked one after it or the block padding."""
    masses = jnp.array([[0.25, 0.0, 0.5, 0.25, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    ends = jnp.cumsum(masses, axis=-1)
    got = sampling._first_exceeding(ends, masses, jnp.array([1.0, 1.0]))
    np.testing.assert_array_equal(np.asarray(got), [3, 1])
    got = sampling._first_exceeding(ends, masses, jnp.array([0.25, 0.0]))  # exactly an end: the next positive one
    np.testing.assert_array_equal(np.asarray(got), [2, 1])
