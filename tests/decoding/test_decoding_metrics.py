"""BLEU / chrF against hand-written formula references and sacrebleu; exact match; perplexity."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import sacrebleu

from jaxformer.decoding import bleu, chrf, exact_match, perplexity

HYPOTHESES = ["the cat sat on the mat today", "a dog runs in the big park"]
REFERENCES = ["the cat sat on the mat", "a dog ran in the big green park"]


def ngrams(items, n: int) -> Counter:
    return Counter(tuple(items[i : i + n]) for i in range(len(items) - n + 1))


def reference_bleu(hypotheses, references) -> float:
    """Papineni et al. (2002): BP * exp(mean_n log p_n), n = 1..4, corpus-level clipped counts,
    BP = exp(1 - r / c) when the hypotheses are shorter than the references (c < r). Whitespace
    tokens (the examples have no punctuation, so 13a tokenisation is a plain split)."""
    matches, totals, hyp_len, ref_len = np.zeros(4), np.zeros(4), 0, 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hyp_counts, ref_counts = ngrams(h, n), ngrams(r, n)
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * brevity * math.exp(np.mean(np.log(matches / totals)))


def reference_chrf(hypotheses, references, order: int = 6, beta: float = 2.0) -> float:
    """Popović (2015) chrF: character n-grams (whitespace removed) for n = 1..6 with corpus-level
    counts; precision and recall averaged over the orders, then F_beta = (1 + b^2) P R / (b^2 P + R)."""
    stats = np.zeros((order, 3))  # hyp count, ref count, matches
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = "".join(hyp.split()), "".join(ref.split())
        for n in range(1, order + 1):
            hyp_counts, ref_counts = ngrams(h, n), ngrams(r, n)
            stats[n - 1] += [
                sum(hyp_counts.values()),
                sum(ref_counts.values()),
                sum((hyp_counts & ref_counts).values()),
            ]
    precision = np.mean(stats[:, 2] / stats[:, 0])
    recall = np.mean(stats[:, 2] / stats[:, 1])
    return 100 * (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def test_bleu_matches_formula_and_sacrebleu():
    want = reference_bleu(HYPOTHESES, REFERENCES)
    assert 20 < want < 90  # a partial match, all n-gram orders non-zero
    assert bleu(HYPOTHESES, REFERENCES) == pytest.approx(want, abs=1e-6)
    assert bleu(HYPOTHESES, REFERENCES) == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score)


def test_bleu_extremes():
    assert bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)
    assert bleu(["xyz uvw qrs tuv"], ["the cat sat on the mat"]) == pytest.approx(0.0)
    # A hypothesis shorter than its reference pays the brevity penalty exp(1 - 6/4).
    assert bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-6)


def test_bleu_with_multiple_references_per_hypothesis():
    refs = [[REFERENCES[0], HYPOTHESES[0]], [REFERENCES[1], "something else entirely here"]]
    want = sacrebleu.corpus_bleu(HYPOTHESES, [[r[0] for r in refs], [r[1] for r in refs]]).score
    assert bleu(HYPOTHESES, refs) == pytest.approx(want)
    assert bleu(HYPOTHESES, refs) > bleu(HYPOTHESES, REFERENCES)


def test_chrf_matches_formula_and_sacrebleu():
    assert chrf(HYPOTHESES, REFERENCES) == pytest.approx(reference_chrf(HYPOTHESES, REFERENCES), abs=1e-6)
    assert chrf(HYPOTHESES, REFERENCES) == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score)
    assert chrf(REFERENCES, REFERENCES) == pytest.approx(100.0)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(HYPOTHESES, REFERENCES[:1])
    with pytest.raises(ValueError, match="not a single string"):
        chrf("the cat", "the cat")
    with pytest.raises(ValueError, match="hypotheses is empty"):
        bleu([], [])


def test_exact_match_and_perplexity():
    assert exact_match(["a b", " c ", "d"], ["a b", "c", "e"]) == pytest.approx(2 / 3)
    assert perplexity(math.log(10.0)) == pytest.approx(10.0)
    assert perplexity(0.0) == 1.0
    assert perplexity(1e4) == math.inf
    with pytest.raises(ValueError, match="mean_loss=nan"):
        perplexity(float("nan"))
