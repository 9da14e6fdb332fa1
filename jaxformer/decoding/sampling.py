"""Choosing the next token from logits: greedy argmax or seeded sampling with temperature, top-k and top-p.

Sampling draws from softmax(logits / temperature) restricted to
  * top-k: the k highest logits (k = 0 keeps all), and
  * top-p (nucleus, Holtzman et al. 2020): the smallest set of most likely tokens
    whose probability mass reaches p (the most likely token is always kept).
Tokens left out get logit -inf. Ties at a cut-off value are all kept. Neither filter sorts the
vocabulary, and the draw inverts the cumulative mass (`draw_tokens`) instead of adding Gumbel
noise to every logit.

Legend: B batch, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def largest_k(values: jax.Array, k: int, block: int = 128) -> tuple[jax.Array, jax.Array]:
    """values [B, M] -> (the k largest [B, k], their indices [B, k]): exactly `jax.lax.top_k`, ties included.

    Two stages: the k blocks of `block` entries with the largest maxima hold the k largest
    entries (a block outranked by k others, by maximum then position, has k better entries
    before each of its own), so `lax.top_k` runs over the block maxima, then over those k
    blocks in index order (which keeps the lower index first among equal values). Faster than
    XLA:CPU's TopK over a long row (benchmarks/results/PERFORMANCE.md, beam search).
    """
    rows, size = values.shape
    blocks = -(-size // block)
    if blocks <= k:
        return top_k_kept_whole(values, k)
    padded = jnp.pad(values, ((0, 0), (0, blocks * block - size)), constant_values=NEG_INF)  # after every real entry
    chunks = padded.reshape(rows, blocks, block)
    best_blocks = jnp.sort(jax.lax.top_k(chunks.max(axis=-1), k)[1], axis=-1)  # [B, k] in index order
    candidates = jnp.take_along_axis(chunks, best_blocks[:, :, None], axis=1).reshape(rows, k * block)
    top, position = top_k_kept_whole(candidates, k)
    return top, jnp.take_along_axis(best_blocks, position // block, axis=1) * block + position % block


def top_k_kept_whole(values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`jax.lax.top_k` whose results XLA may not rewrite: when only slices of the top-k values are
    used (e.g. the k-th largest), XLA:CPU turned TopK into a full sort of the row (measured in
    benchmarks/results/PERFORMANCE.md)."""
    top, ids = jax.lax.optimization_barrier(jax.lax.top_k(values, k))
    return top, ids


def apply_top_k(logits: jax.Array, top_k: int) -> jax.Array:
    """logits [B, V] -> [B, V] with everything below the k-th largest value set to -inf (k=0: unchanged)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = largest_k(logits, top_k)[0][:, -1:]  # [B, 1]
    return jnp.where(logits >= kth, logits, NEG_INF)


def order_keys(values: jax.Array) -> jax.Array:
    """float [...] -> uint32 [...] in the same order as the values (-0.0 and +0.0 get the same key).

    Positive floats compare like their bit patterns; negative ones in reverse. Setting the sign bit
    of positives and flipping every bit of negatives puts both in one unsigned order:
    -inf -> 0x007FFFFF, +0.0 -> 0x80000000, +inf -> 0xFF800000.
    """
    values = values.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(jnp.where(values == 0, jnp.float32(0), values), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def apply_top_p(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """logits [B, V] -> [B, V] keeping the nucleus of probability mass `top_p` (a scalar in (0, 1]).

    A token is kept when the tokens strictly more likely than it hold less than `top_p` of the
    mass (so the most likely is always kept, and ties are kept together). The cut-off is the
    smallest key k (`order_keys` of the logits) whose "mass above k" is below `top_p`; that mass
    only falls as k grows, so 32 halvings of the uint32 key range find k exactly, each one masked
    sum over the row. No sort (the timings against a sort: benchmarks/results/PERFORMANCE.md).
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [B, V]
    keys = order_keys(logits)  # [B, V]

    def halve(_: jax.Array, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds  # [B]: mass above `low` >= top_p > mass above `high`
        middle = low + (high - low) // 2
        mass_above = jnp.sum(jnp.where(keys > middle[:, None], probs, 0.0), axis=-1)
        below_p = mass_above < top_p
        return jnp.where(below_p, low, middle), jnp.where(below_p, middle, high)

    lowest = keys.min(axis=-1)
    start = (jnp.where(lowest > 0, lowest - 1, lowest), keys.max(axis=-1))  # the mass above `start[0]` is all of it
    _, cut = jax.lax.fori_loop(0, 32, halve, start)
    return jnp.where(keys >= cut[:, None], logits, NEG_INF)


def draw_tokens(rng: jax.Array, logits: jax.Array, block: int = 128) -> jax.Array:
    """One draw per row from softmax(logits [B, V]) -> [B] int32, by inverting the cumulative mass.

    One uniform number u per row, scaled to the row's mass; the token drawn is the first whose
    cumulative mass (in id order) exceeds u. The cumulative mass is found in two short steps: over
    the masses of blocks of `block` ids, then inside the chosen block. A token of probability 0
    (logit -inf) is never drawn; where rounding puts u past the last cumulative mass, the last token
    of positive probability is. `jax.random.categorical` draws Gumbel noise for every entry
    instead, which is much slower on the CPU (benchmarks/results/PERFORMANCE.md, sampling).
    """
    rows, size = logits.shape
    blocks = -(-size // block)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    chunks = jnp.pad(probs, ((0, 0), (0, blocks * block - size))).reshape(rows, blocks, block)
    block_mass = chunks.sum(axis=-1)  # [B, blocks]
    block_ends = jnp.cumsum(block_mass, axis=-1)
    target = jax.random.uniform(rng, (rows,)) * block_ends[:, -1]  # [B] in [0, row mass)
    chosen = _first_exceeding(block_ends, block_mass, target)  # [B]
    before = jnp.where(chosen > 0, jnp.take_along_axis(block_ends, jnp.maximum(chosen - 1, 0)[:, None], 1)[:, 0], 0.0)
    inside = jnp.take_along_axis(chunks, chosen[:, None, None], axis=1)[:, 0]  # [B, block]
    offset = _first_exceeding(jnp.cumsum(inside, axis=-1), inside, target - before)
    return (chosen * block + offset).astype(jnp.int32)


def _first_exceeding(ends: jax.Array, masses: jax.Array, target: jax.Array) -> jax.Array:
    """ends [B, N] (cumulative `masses`) -> [B]: the first position whose end exceeds target [B]
    (never one of mass 0: its end equals the one before), at most the last position of positive mass."""
    first = jnp.sum(ends <= target[:, None], axis=-1)
    positions = jax.lax.broadcasted_iota(jnp.int32, masses.shape, 1)
    last_positive = jnp.max(jnp.where(masses > 0, positions, 0), axis=-1)
    return jnp.minimum(first, last_positive)


# Sampling with top-k or top-p first looks at this many most likely tokens (see `sample_logits`).
CANDIDATES = 256


def sample_logits(
    logits: jax.Array,
    rng: jax.Array,
    temperature: jax.Array,
    top_k: int,
    top_p: jax.Array,
    use_top_p: bool,
    ignored: jax.Array | None = None,
) -> jax.Array:
    """Draw one token per row from logits [B, V] -> [B] int32. top_k and use_top_p are static.

    `ignored` [B] bool marks rows whose token the caller throws away (finished rows): their
    draw may come from the candidates even where that is not exact.

    With top-p, the nucleus usually lies among the few most likely tokens: the draw is made
    among the `CANDIDATES` largest logits when the filters keep nothing outside them
    (`_sample_candidates`), else over the whole vocabulary, the same distribution either way.
    Top-k alone goes straight to the whole row (why, with the timings: benchmarks/results/PERFORMANCE.md).
    """
    scaled = logits.astype(jnp.float32) / temperature
    count = max(CANDIDATES, 2 * top_k)
    if not use_top_p or count >= scaled.shape[-1]:
        return _sample_all(scaled, rng, top_k, top_p, use_top_p)
    tokens, exact = _sample_candidates(scaled, rng, top_k, top_p, use_top_p, count)
    if ignored is not None:
        exact |= ignored
    return jax.lax.cond(jnp.all(exact), lambda: tokens, lambda: _sample_all(scaled, rng, top_k, top_p, use_top_p))


def _sample_all(scaled: jax.Array, rng: jax.Array, top_k: int, top_p: jax.Array, use_top_p: bool) -> jax.Array:
    """The draw over the whole vocabulary: scaled logits [B, V] filtered by top-k, then top-p."""
    scaled = apply_top_k(scaled, top_k)
    if use_top_p:
        scaled = apply_top_p(scaled, top_p)
    return draw_tokens(rng, scaled)


def _sample_candidates(
    scaled: jax.Array, rng: jax.Array, top_k: int, top_p: jax.Array, use_top_p: bool, count: int
) -> tuple[jax.Array, jax.Array]:
    """The draw among the `count` largest scaled logits [B, V] -> (tokens [B], exact [B]).

    `exact` says that top-k and top-p, applied to the whole row, keep only candidates: every kept
    value, and the k-th largest, is above the smallest candidate (so no token outside the
    candidates ties with them, and the nucleus ended inside them). Where it holds, the candidates'
    filtered softmax is the whole row's.
    """
    values, ids = top_k_kept_whole(scaled, count)  # [B, C], descending
    kept = values
    exact = jnp.ones(values.shape[:1], jnp.bool_)
    if top_k > 0:
        kth = values[:, top_k - 1 : top_k]  # [B, 1]
        kept = jnp.where(values >= kth, values, NEG_INF)
        exact &= kth[:, 0] > values[:, -1]
    if use_top_p:
        # masses as apply_top_p computes them: over what top-k kept, else over the whole row
        normaliser = jax.nn.logsumexp(kept if top_k > 0 else scaled, axis=-1, keepdims=True)
        probs = jnp.exp(kept - normaliser)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        threshold = jnp.min(jnp.where(mass_before < top_p, kept, jnp.inf), axis=-1, keepdims=True)
        kept = jnp.where(kept >= threshold, kept, NEG_INF)
    smallest_kept = jnp.min(jnp.where(jnp.isfinite(kept), kept, jnp.inf), axis=-1)
    exact &= smallest_kept > values[:, -1]
    choice = draw_tokens(rng, kept)  # [B] index into the candidates
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0], exact


def greedy_tokens(logits: jax.Array) -> jax.Array:
    """[B, V] -> [B] int32 argmax (the lowest id wins ties; a NaN counts as the maximum, as in `jnp.argmax`).

    Two plain reductions (row maximum, then the lowest id holding it) instead of argmax's
    value-and-index reduction, which XLA:CPU runs as a scalar loop: 190 us vs ~40 us per step
    over a 50257-token vocabulary, 5% of a batch-1 decoding step of the GPT-2-shaped benchmark.
    """
    top = logits.max(axis=-1, keepdims=True)  # NaN if the row has one
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    hit = (logits == top) | jnp.isnan(logits)
    return jnp.min(jnp.where(hit, ids, logits.shape[-1]), axis=-1).astype(jnp.int32)
