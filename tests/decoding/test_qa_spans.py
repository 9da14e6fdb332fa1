"""Best answer spans against a brute-force NumPy reference of the same rule (Must show 3)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxformer.decoding.spans import Span, best_spans, char_range, context_mask, span_text


def brute_force(start, end, allowed, max_answer_length, top_k):
    """Every (i, j) by two loops; best score first, ties by smaller i then smaller j."""
    found = []
    for i in range(len(start)):
        for j in range(len(end)):
            if allowed[i] and allowed[j] and i <= j and j - i + 1 <= max_answer_length:
                found.append((-(float(start[i]) + float(end[j])), i, j))
    return [(i, j, -neg) for neg, i, j in sorted(found)[:top_k]]


@pytest.mark.parametrize("seed", range(40))
def test_best_spans_equal_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, 40))
    max_answer_length = int(rng.integers(1, 12))
    top_k = int(rng.integers(1, 25))
    if seed % 4 == 0:  # coarse logits: many ties, the order must still be the reference's
        start, end = rng.integers(-3, 3, length).astype(np.float32), rng.integers(-3, 3, length).astype(np.float32)
    else:
        start, end = rng.normal(0, 3, length).astype(np.float32), rng.normal(0, 3, length).astype(np.float32)
    allowed = rng.random(length) < 0.7
    ours = best_spans(start, end, allowed, max_answer_length, top_k)
    expected = brute_force(start, end, allowed, max_answer_length, top_k)
    assert [(s.start, s.end) for s in ours] == [(i, j) for i, j, _ in expected]
    np.testing.assert_allclose([s.score for s in ours], [score for _, _, score in expected], rtol=1e-12)
    for span in ours:
        assert span.start <= span.end and span.end - span.start + 1 <= max_answer_length
        assert allowed[span.start] and allowed[span.end]


def test_max_length_and_order_constraints_bind():
    """The unconstrained argmaxes (end before start; a span too long) are not chosen."""
    start = np.array([0.0, 0.0, 0.0, 9.0, 0.0, 0.0])
    end = np.array([8.0, 0.0, 0.0, 0.0, 0.0, 7.0])
    allowed = np.ones(6, bool)
    best = best_spans(start, end, allowed, max_answer_length=30)[0]
    assert (best.start, best.end) == (3, 5)  # end 0 < start 3 is not a span
    best = best_spans(start, end, allowed, max_answer_length=2)[0]
    assert (best.start, best.end) == (3, 3)  # 3..5 is 3 tokens > 2
    best = best_spans(start, end, allowed, max_answer_length=1)[0]
    assert (best.start, best.end, best.score) == (3, 3, 9.0)


def test_masked_tokens_never_win_and_probability_is_the_pipeline_score():
    start = np.array([50.0, 1.0, 2.0, 0.5, 40.0])  # [CLS] and [SEP] carry the largest logits
    end = np.array([50.0, 0.1, 1.5, 2.5, 40.0])
    allowed = context_mask([None, 1, 1, 1, None])
    spans = best_spans(start, end, allowed, top_k=10)
    assert [(s.start, s.end) for s in spans] == [(2, 3), (1, 3), (2, 2), (3, 3), (1, 2), (1, 1)]
    p_start = np.exp(start[1:4]) / np.exp(start[1:4]).sum()
    p_end = np.exp(end[1:4]) / np.exp(end[1:4]).sum()
    assert spans[0].probability == pytest.approx(p_start[1] * p_end[2], rel=1e-12)


def test_no_candidate_gives_no_span_and_bad_arguments_raise():
    assert best_spans(np.zeros(3), np.zeros(3), np.zeros(3, bool)) == []
    with pytest.raises(ValueError, match="max_answer_length=0 must be >= 1"):
        best_spans(np.zeros(3), np.zeros(3), np.ones(3, bool), max_answer_length=0)
    with pytest.raises(ValueError, match="must be one \\[T\\] each"):
        best_spans(np.zeros(3), np.zeros(4), np.ones(3, bool))


def test_span_text_maps_tokens_back_to_characters():
    context = "Paris is the capital of France."
    offsets = [(0, 0), (0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (30, 31), (0, 0)]
    span = Span(start=4, end=6, score=1.0, probability=0.5)
    assert char_range(offsets, span) == (13, 30)
    assert span_text(context, offsets, span) == "capital of France"
