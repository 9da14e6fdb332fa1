"""Speculative decoding: greedy equals plain greedy token for token; sampling keeps the target's distribution.

Greedy is compared with `decoding.generate(method="greedy")` (itself checked against no-cache full
forward passes in test_greedy.py). Sampling is checked twice against exact distributions computed
with NumPy: the rejection rule alone (`accept_sampled`, fixed p and q over V=5, many rows at once),
and the whole search on a tiny V=5 model, whose exact distribution over every 3-token continuation
comes from full forward passes without a cache. Both use one chi-square statistic, and each test
shows the statistic rejects a wrong rule at the same sample size (always accepting the draft).
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from support.decoding_reference import PROMPTS, full_forward, model_and_params

from jaxformer import decoding, models, presets
from jaxformer.decoding.speculative import accept_sampled, speculative_generate
from jaxformer.errors import InputError

NEW = 9
P_VALUE = 1e-4  # a correct sampler fails a test with this probability


def chi_square_p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's test of `counts` against probabilities `probs` (cells expected < 5 pooled into one)."""
    counts, probs = np.asarray(counts, float).ravel(), np.asarray(probs, float).ravel()
    expected = probs * counts.sum()
    small = expected < 5
    if np.any(counts[probs == 0] > 0):
        return 0.0  # a count where the probability is 0
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    statistic = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    return float(stats.chi2.sf(statistic, keep.sum() - 1))


def perturbed(params, scale: float, seed: int):
    """params + N(0, scale^2) noise: a draft close to the target that still disagrees sometimes."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (np.asarray(x) + rng.normal(0, scale, x.shape)).astype(np.float32), params)


# Greedy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scan"), [("tiny-gpt2", False), pytest.param("tiny-llama", True, marks=pytest.mark.slow)]
)
def test_greedy_equals_plain_greedy_for_every_draft_and_k(name, scan):
    config, params = model_and_params(name, scan)
    prompts = [list(p) for p in PROMPTS]  # 3 rows of different lengths: left padding
    expected = decoding.generate(config, params, prompts, max_new_tokens=NEW)
    random_config, random_draft = model_and_params(name, scan, seed=1)
    drafts = {
        "random": (random_config, random_draft),
        "close": (config, perturbed(params, 0.05, 2)),
        "identical": (config, params),
    }
    rates = {}
    for label, (draft_config, draft_params) in drafts.items():
        for k in (1, 3):
            result = speculative_generate(
                config, params, draft_config, draft_params, prompts, max_new_tokens=NEW, draft_tokens=k
            )
            np.testing.assert_array_equal(result.tokens, expected, err_msg=f"{label} draft, k={k}")
            rates[label, k] = result.acceptance_rate
            assert result.proposed > 0 and result.rounds >= 1
    for k in (1, 3):
        assert rates["identical", k] == 1.0
        assert rates["random", k] < 0.5  # a draft that disagrees often
        # the identical draft needs ceil((N - 1) / (k + 1)) rounds
    result = speculative_generate(config, params, config, params, prompts, max_new_tokens=NEW, draft_tokens=3)
    assert result.rounds == -(-(NEW - 1) // 4)
    assert 0.0 < rates["close", 3] <= 1.0


def test_greedy_with_a_different_draft_architecture_and_eos():
    config, params = model_and_params("tiny-gpt2")
    draft_config, draft_params = model_and_params("tiny-llama", True, seed=3)  # RoPE, scanned layers
    prompts = [list(p) for p in PROMPTS]
    plain = decoding.generate(config, params, prompts, max_new_tokens=NEW)
    eos = int(plain[0, 3])  # row 0 stops at its 4th token; other rows may stop elsewhere or never
    expected = decoding.generate(config, params, prompts, max_new_tokens=NEW, eos_id=eos, pad_id=0)
    assert (expected == 0).any()
    got = speculative_generate(
        config, params, draft_config, draft_params, prompts, max_new_tokens=NEW, draft_tokens=3, eos_id=eos
    )
    np.testing.assert_array_equal(got.tokens, expected)


@pytest.mark.parametrize("new", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(5, marks=pytest.mark.slow)])
def test_max_new_tokens_is_exact_for_every_k(new):
    config, params = model_and_params("tiny-gpt2")
    expected = decoding.generate(config, params, [[5, 6]], max_new_tokens=new)
    for k in (1, 4):
        got = speculative_generate(config, params, config, params, [[5, 6]], max_new_tokens=new, draft_tokens=k)
        assert got.tokens.shape == (1, new)
        np.testing.assert_array_equal(got.tokens, expected)


def test_bad_drafts_and_settings_are_one_line_errors():
    config, params = model_and_params("tiny-gpt2")
    other = presets.get("tiny-gpt2", vocab_size=config.vocab_size + 1)
    with pytest.raises(InputError, match="draft's vocabulary has 100 ids but the target's has 99"):
        speculative_generate(config, params, other, params, [[5]], max_new_tokens=2)
    seq2seq = presets.get("tiny-transformer")
    with pytest.raises(InputError, match="needs a decoder-only draft"):
        speculative_generate(config, params, seq2seq, params, [[5]], max_new_tokens=2)
    with pytest.raises(InputError, match="no speculative form"):
        speculative_generate(config, params, config, params, [[5]], max_new_tokens=2, method="beam")
    with pytest.raises(InputError, match="draft_tokens=0 must be in"):
        speculative_generate(config, params, config, params, [[5]], max_new_tokens=2, draft_tokens=0)
    with pytest.raises(InputError, match="exceeds the target model's max_len"):
        speculative_generate(config, params, config, params, [[5]], max_new_tokens=config.max_len - 1, draft_tokens=4)


# The rejection rule alone -------------------------------------------------------------------------

ROWS = 60_000


def rule_samples(p: np.ndarray, q: np.ndarray, seed: int, always_accept: bool = False):
    """ROWS rows of the rule with context-free p [k + 1, V] and q [k, V] -> (count [R], tokens [R, k + 1])."""
    k = q.shape[0]
    draft_key, rule_key = jax.random.split(jax.random.PRNGKey(seed))
    q_rows = jnp.broadcast_to(jnp.asarray(q, jnp.float32), (ROWS, k, q.shape[1]))
    p_rows = jnp.broadcast_to(jnp.asarray(p, jnp.float32), (ROWS, k + 1, p.shape[1]))
    drafts = jax.random.categorical(draft_key, jnp.log(q_rows)).astype(jnp.int32)  # [R, k] from q
    count, tokens = jax.jit(accept_sampled)(rule_key, drafts, q_rows, p_rows)
    if always_accept:  # the wrong rule: keep every draft, then the bonus token
        count = jnp.full((ROWS,), k, jnp.int32)
        tokens = jnp.concatenate([drafts, tokens[:, k:]], axis=1)
    return np.asarray(count), np.asarray(tokens)


def test_rejection_rule_outputs_the_target_distribution_and_always_accept_does_not():
    rng = np.random.default_rng(0)
    k, vocab = 3, 5
    p = rng.dirichlet(np.ones(vocab), size=k + 1)
    q = rng.dirichlet(np.ones(vocab), size=k)
    q[1, 2] = 0.0  # a token the draft never proposes, which the target still produces
    q[1] /= q[1].sum()
    count, tokens = rule_samples(p, q, seed=1)
    assert 0 < count.mean() < k  # rejections and acceptances both happen
    for i in range(k + 1):
        # Token i of every row that emits it (i <= count), and token i of rows cut at i (the lock-step rule).
        emitted = tokens[count >= i, i]
        assert chi_square_p_value(np.bincount(emitted, minlength=vocab), p[i]) > P_VALUE, f"position {i}"
    assert chi_square_p_value(np.bincount(tokens[:, 0], minlength=vocab), p[0]) > P_VALUE
    # Token 1 given token 0 (for rows emitting both): still p[1] (the context-free target ignores the prefix).
    both = count >= 1
    for first in range(vocab):
        chosen = both & (tokens[:, 0] == first)
        if chosen.sum() > 500:
            assert chi_square_p_value(np.bincount(tokens[chosen, 1], minlength=vocab), p[1]) > P_VALUE
    _, wrong = rule_samples(p, q, seed=1, always_accept=True)
    assert chi_square_p_value(np.bincount(wrong[:, 0], minlength=vocab), p[0]) < 1e-12


def test_identical_draft_is_always_accepted():
    p = np.random.default_rng(1).dirichlet(np.ones(5), size=3)
    count, _ = rule_samples(p, p[:2], seed=2)
    assert (count == 2).all()


# The whole search on a V=5 model -------------------------------------------------------------------

VOCAB, PROMPT, STEPS = 5, [1, 2], 3


def tiny_model(seed: int, std: float = 0.35):
    config = presets.get("tiny-gpt2", vocab_size=VOCAB)
    abstract = nn.meta.unbox(models.abstract_params(config))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda leaf: rng.normal(0.0, std, leaf.shape).astype(np.float32), abstract)
    return config, params


def sequence_distribution(config, params, temperature: float = 1.0, top_k: int = 0) -> np.ndarray:
    """Exact probabilities [V] * STEPS of every continuation, from full no-cache forward passes (NumPy filters)."""
    table = np.zeros((VOCAB,) * STEPS)
    for sequence in itertools.product(range(VOCAB), repeat=STEPS):
        logits = np.asarray(full_forward(config)({"params": params}, np.array([PROMPT + list(sequence)])))[0]
        probability = 1.0
        for i, token in enumerate(sequence):
            scaled = logits[len(PROMPT) - 1 + i].astype(np.float64) / temperature
            if top_k:
                scaled = np.where(scaled >= np.sort(scaled)[-top_k], scaled, -np.inf)
            probs = np.exp(scaled - scaled.max())
            probability *= probs[token] / probs.sum()
        table[sequence] = probability
    return table


def sampled_counts(config, params, draft_config, draft_params, rows: int, seeds: int, **settings):
    counts = np.zeros((VOCAB,) * STEPS)
    rates = []
    for seed in range(seeds):
        result = speculative_generate(
            config,
            params,
            draft_config,
            draft_params,
            [PROMPT] * rows,
            max_new_tokens=STEPS,
            method="sample",
            seed=seed,
            **settings,
        )
        np.add.at(counts, tuple(result.tokens.T), 1)
        rates.append(result.acceptance_rate)
    return counts, float(np.mean(rates))


@pytest.mark.parametrize("draft", ["random", "identical"])
def test_sampled_sequences_follow_the_target_distribution(draft):
    config, params = tiny_model(0)
    draft_config, draft_params = (config, params) if draft == "identical" else tiny_model(1)
    exact = sequence_distribution(config, params)
    counts, rate = sampled_counts(config, params, draft_config, draft_params, 2000, 8, draft_tokens=2)
    assert chi_square_p_value(counts, exact) > P_VALUE
    if draft == "identical":
        assert rate == 1.0
    else:
        assert rate < 1.0
        # the same statistic, the same sample size: the draft's own distribution is rejected
        assert chi_square_p_value(counts, sequence_distribution(draft_config, draft_params)) < 1e-12


def test_sampling_respects_the_target_temperature_and_top_k():
    config, params = tiny_model(0)
    draft_config, draft_params = tiny_model(1)
    exact = sequence_distribution(config, params, temperature=0.7, top_k=3)
    counts, _ = sampled_counts(
        config, params, draft_config, draft_params, 2000, 8, draft_tokens=3, temperature=0.7, top_k=3
    )
    assert counts[exact == 0].sum() == 0  # never a token outside the target's top 3
    assert chi_square_p_value(counts, exact) > P_VALUE
    assert chi_square_p_value(counts, sequence_distribution(config, params)) < 1e-12  # the unfiltered one fails
