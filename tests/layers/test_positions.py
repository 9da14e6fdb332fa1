"""Reference tests for positional information: sinusoidal table, learned table, rotary, T5 relative buckets."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers import (
    LearnedPositions,
    RelativePositionBias,
    SinusoidalPositions,
    apply_rotary,
    relative_position_bucket,
    sinusoidal_table,
)


def paper_sinusoid(pos: int, dim: int, d_model: int) -> float:
    """Vaswani et al. (2017) 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same angle)."""
    i = dim // 2
    angle = pos / 10000 ** (2 * i / d_model)
    return math.sin(angle) if dim % 2 == 0 else math.cos(angle)


def test_sinusoidal_table_matches_paper_formula():
    max_len, d_model = 23, 38
    table = sinusoidal_table(max_len, d_model)
    want = np.array([[paper_sinusoid(p, j, d_model) for j in range(d_model)] for p in range(max_len)])
    assert table.shape == (max_len, d_model)
    np.testing.assert_allclose(table, want, atol=1e-6, rtol=0)


def test_sinusoidal_concat_layout_is_sines_then_cosines():
    max_len, d_model = 11, 14
    table = sinusoidal_table(max_len, d_model, layout="concat")
    half = d_model // 2
    for p in range(max_len):
        for i in range(half):
            angle = p / 10000 ** (2 * i / d_model)
            assert table[p, i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, half + i] == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_module_looks_up_rows_of_the_table():
    positions = jnp.array([[0, 5, 2], [7, 7, 1]])
    module = SinusoidalPositions(max_len=9, d_model=10)
    out = module.apply({}, positions)
    np.testing.assert_array_equal(np.asarray(out), sinusoidal_table(9, 10)[np.asarray(positions)])


def test_learned_positions_look_up_their_table():
    positions = jnp.array([[3, 0, 4]])
    module = LearnedPositions(max_len=5, d_model=7)
    assert jax.eval_shape(module.init, jax.random.PRNGKey(0), positions)["params"]["embedding"].names == (
        "length",
        "embed",
    )
    table = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    params = {"embedding": table}
    assert table.shape == (5, 7)
    np.testing.assert_array_equal(np.asarray(module.apply({"params": params}, positions)), table[[[3, 0, 4]]])


def numpy_rotary(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Su et al. (2021) eq. 34 in the rotate-half layout: pair (x_i, x_{i+H/2}) rotated by pos * base^(-2i/H)."""
    out = np.empty_like(x, dtype=np.float64)
    batch, length, _, head_dim = x.shape
    half = head_dim // 2
    for b in range(batch):
        for t in range(length):
            for i in range(half):
                theta = positions[b, t] * base ** (-2 * i / head_dim)
                c, s = math.cos(theta), math.sin(theta)
                a, bb = x[b, t, :, i], x[b, t, :, i + half]
                out[b, t, :, i] = a * c - bb * s
                out[b, t, :, i + half] = bb * c + a * s
    return out


def test_rotary_matches_numpy_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 9, 30], [4, 4, 0, 11, 2]])
    got = apply_rotary(jnp.asarray(x), jnp.asarray(positions), base=10000.0)
    np.testing.assert_allclose(np.asarray(got), numpy_rotary(x, positions, 10000.0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("offset", [0, 1, 3, -5, 17])
def test_rotary_dot_product_depends_only_on_relative_offset(offset):
    rng = np.random.default_rng(1)
    head_dim = 10
    q = jnp.asarray(rng.normal(size=(1, 1, 1, head_dim)).astype(np.float32))
    k = jnp.asarray(rng.normal(size=(1, 1, 1, head_dim)).astype(np.float32))
    scores = []
    for p in (0, 2, 7, 40, 123):
        q_rot = apply_rotary(q, jnp.array([[p]]))
        k_rot = apply_rotary(k, jnp.array([[p + offset]]))
        scores.append(float(jnp.sum(q_rot * k_rot)))
    np.testing.assert_allclose(scores, scores[0], atol=1e-4, rtol=1e-5)
    # and the score does depend on the offset (a constant function would pass the line above)
    if offset != 0:
        unrotated = float(jnp.sum(q * k))
        assert abs(scores[0] - unrotated) > 1e-3


def paper_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5 (Raffel et al. 2020) relative-position buckets, written with plain Python integers and math.log.

    `relative` = key position - query position. Bidirectional: half of the buckets are for keys after the query.
    Within a half, distances below half of its buckets get one bucket each; larger ones share buckets spaced
    logarithmically up to `max_distance`, beyond which everything falls in the last bucket.
    """
    offset = 0
    if bidirectional:
        num_buckets = num_buckets // 2
        if relative > 0:
            offset = num_buckets
        distance = abs(relative)
    else:
        distance = max(-relative, 0)
    exact = num_buckets // 2
    if distance < exact:
        return offset + distance
    spread = math.log(distance / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    return offset + min(exact + int(spread), num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 20), (10, 33)])
def test_relative_position_bucket_matches_paper(bidirectional, num_buckets, max_distance):
    relative = np.arange(-300, 301)
    got = np.asarray(relative_position_bucket(jnp.asarray(relative), bidirectional, num_buckets, max_distance))
    want = np.array([paper_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative])
    np.testing.assert_array_equal(got, want)
    assert got.min() == 0 and got.max() == num_buckets - 1  # all buckets are used over this range


def test_relative_position_bias_reads_table_by_bucket():
    heads, buckets, max_distance = 3, 8, 20
    query_positions = jnp.array([[0, 1, 2, 3], [5, 0, 1, 9]])
    key_positions = jnp.array([[0, 1, 2, 3, 30], [1, 2, 3, 4, 0]])
    module = RelativePositionBias(num_heads=heads, num_buckets=buckets, max_distance=max_distance, bidirectional=True)
    abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), query_positions, key_positions)["params"]
    assert abstract["embedding"].value.shape == (buckets, heads)
    table = np.random.default_rng(1).normal(size=(buckets, heads)).astype(np.float32)  # [buckets, N]
    params = {"embedding": table}
    bias = np.asarray(module.apply({"params": params}, query_positions, key_positions))
    assert bias.shape == (2, heads, 4, 5)
    for b in range(2):
        for t in range(4):
            for s in range(5):
                rel = int(key_positions[b, s] - query_positions[b, t])
                np.testing.assert_array_equal(bias[b, :, t, s], table[paper_bucket(rel, True, buckets, max_distance)])
