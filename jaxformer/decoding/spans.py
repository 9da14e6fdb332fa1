"""Extractive question answering: the best answer spans from start/end logits.

The rule of transformers' question-answering pipeline and its run_qa post-processing: a span
(i, j) is a candidate when both ends are context tokens (`allowed`: not the question, special
or padding tokens), i <= j and j - i + 1 <= max_answer_length; its score is
start_logits[i] + end_logits[j]. Candidates are ranked by score, highest first; ties go to the
smaller start, then the smaller end (a stable order over i * T + j), so the result is the same
on every run and backend.

    spans = best_spans(start [T], end [T], allowed [T] bool, max_answer_length=30, top_k=1)
    text = span_text(context, offsets [T, 2], spans[0])   # the context's characters of the span

Legend: T tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Span:
    """Tokens start..end (inclusive), start_logits[start] + end_logits[end], and its probability.

    probability: softmax(start over allowed tokens)[start] * softmax(end over allowed tokens)[end],
    the pipeline's `score`.
    """

    start: int
    end: int
    score: float
    probability: float


def candidate_scores(
    start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, max_answer_length: int
) -> np.ndarray:
    """[T, T] float64: start_logits[i] + end_logits[j] for candidate spans (i, j), -inf elsewhere."""
    start = np.asarray(start_logits, np.float64)
    end = np.asarray(end_logits, np.float64)
    allowed = np.asarray(allowed, bool)
    if not (start.ndim == end.ndim == allowed.ndim == 1 and start.shape == end.shape == allowed.shape):
        raise ValueError(
            f"start_logits {start.shape}, end_logits {end.shape} and allowed {allowed.shape} must be one [T] each."
        )
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length={max_answer_length} must be >= 1.")
    i = np.arange(start.shape[0])[:, None]
    j = np.arange(start.shape[0])[None, :]
    ok = (i <= j) & (j - i + 1 <= max_answer_length) & allowed[:, None] & allowed[None, :]
    return np.where(ok, start[:, None] + end[None, :], -np.inf)


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    allowed: np.ndarray,
    max_answer_length: int = 30,
    top_k: int = 1,
) -> list[Span]:
    """The `top_k` best candidate spans, best first (fewer when there are fewer candidates; none without any)."""
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1.")
    scores = candidate_scores(start_logits, end_logits, allowed, max_answer_length)
    length = scores.shape[0]
    flat = scores.reshape(-1)
    order = np.argsort(-flat, kind="stable")  # ties: smaller i * T + j first
    count = int(np.isfinite(flat).sum())
    picked = order[: min(top_k, count)]
    start_p = _masked_softmax(np.asarray(start_logits, np.float64), np.asarray(allowed, bool))
    end_p = _masked_softmax(np.asarray(end_logits, np.float64), np.asarray(allowed, bool))
    return [
        Span(int(k // length), int(k % length), float(flat[k]), float(start_p[k // length] * end_p[k % length]))
        for k in picked
    ]


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """softmax over the allowed entries of logits [T]; 0 elsewhere."""
    if not allowed.any():
        return np.zeros_like(logits)
    shifted = np.where(allowed, logits - logits[allowed].max(), -np.inf)
    weights = np.exp(shifted)
    return weights / weights.sum()


def context_mask(sequence_ids: Sequence[int | None], context_index: int = 1) -> np.ndarray:
    """[T] bool: tokens of the context (sequence `context_index` of a (question, context) pair).

    `sequence_ids` as `tokenizers.Encoding.sequence_ids`: None for special and padding tokens.
    """
    return np.array([s == context_index for s in sequence_ids], bool)


def span_text(context: str, offsets: Sequence[tuple[int, int]], span: Span) -> str:
    """The characters of `context` the span's tokens cover (offsets [T, 2]: each token's (begin, end) in the context)."""
    return context[char_range(offsets, span)[0] : char_range(offsets, span)[1]]


def char_range(offsets: Sequence[tuple[int, int]], span: Span) -> tuple[int, int]:
    """(first character, one past the last character) of the span in the context."""
    return int(offsets[span.start][0]), int(offsets[span.end][1])
