"""Text-level evaluation metrics: corpus BLEU and chrF (via sacrebleu), exact match, perplexity.

BLEU and chrF take detokenized strings (what a reader sees); sacrebleu applies
its own standard tokenisation ("13a" for BLEU), so scores are comparable across
systems (Post 2018). Scores are on the 0..100 scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sacrebleu

from jaxformer.errors import InputError


def _reference_streams(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    """references: one string per hypothesis, or one list of alternatives per hypothesis (same count for all)."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise InputError("hypotheses and references must be lists of strings (one per segment), not a single string.")
    if len(hypotheses) != len(references):
        raise InputError(f"got {len(hypotheses)} hypotheses but {len(references)} references; pass one per hypothesis.")
    if not hypotheses:
        raise InputError("hypotheses is empty; BLEU/chrF need at least one segment.")
    if all(isinstance(r, str) for r in references):
        return [list(references)]  # type: ignore[arg-type]
    counts = {len(r) for r in references}
    if len(counts) != 1 or 0 in counts:
        raise InputError("every hypothesis needs the same number (>= 1) of alternative references.")
    return [[refs[i] for refs in references] for i in range(counts.pop())]


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    tokenize: str = "13a",
    lowercase: bool = False,
) -> float:
    """Corpus BLEU (Papineni et al. 2002) of detokenized hypotheses against references, 0..100."""
    streams = _reference_streams(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams, tokenize=tokenize, lowercase=lowercase).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], word_order: int = 0) -> float:
    """Corpus chrF (Popović 2015; chrF++ with word_order=2), beta=2, character n-grams 1..6, 0..100."""
    streams = _reference_streams(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), streams, word_order=word_order).score)


def exact_match(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction (0..1) of predictions equal to their target after stripping surrounding whitespace."""
    if len(predictions) != len(targets):
        raise InputError(f"got {len(predictions)} predictions but {len(targets)} targets; pass one per prediction.")
    if not predictions:
        raise InputError("predictions is empty; exact_match needs at least one pair.")
    return sum(p.strip() == t.strip() for p, t in zip(predictions, targets, strict=True)) / len(predictions)


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross-entropy in nats); inf when it overflows."""
    loss = float(mean_loss)
    if math.isnan(loss) or loss < 0:
        raise InputError(f"mean_loss={mean_loss!r} must be a non-negative cross-entropy in nats.")
    return math.exp(loss) if loss < 700 else math.inf
