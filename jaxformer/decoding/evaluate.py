"""Evaluation of a split: mean loss, accuracy and perplexity from a compiled eval step, and text scores.

    split_metrics(eval_step, params, batches, max_batches=0)  -> {"eval_loss", "eval_accuracy", "eval_perplexity"}
    text_scores(hypotheses, references)                       -> {"bleu", "chrf", "exact_match"}

The eval step (`train.step.make_eval_step`, placed by the caller) returns per-batch sums
("loss_sum", "weight_sum", "correct_sum"); the means weight every target token equally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from jaxformer.decoding.metrics import bleu, chrf, exact_match

SUMS = ("loss_sum", "weight_sum", "correct_sum")
PERPLEXITY_LOSS_CAP = 50.0  # perplexity is reported as exp(min(loss, cap)): finite in JSON


def split_metrics(eval_step: Any, params: Any, batches: Iterable[Any], max_batches: int = 0) -> dict[str, float]:
    """Mean loss, accuracy and perplexity over `batches` (the first `max_batches` when > 0)."""
    totals = dict.fromkeys(SUMS, 0.0)
    for index, batch in enumerate(batches):
        if max_batches and index >= max_batches:
            break
        sums = eval_step(params, batch)
        for key in totals:
            totals[key] += float(sums[key])
    denom = max(totals["weight_sum"], 1.0)
    loss = totals["loss_sum"] / denom
    return {
        "eval_loss": loss,
        "eval_accuracy": totals["correct_sum"] / denom,
        "eval_perplexity": math.exp(min(loss, PERPLEXITY_LOSS_CAP)),
    }


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu) and exact match of hypotheses against references."""
    return {
        "bleu": bleu(hypotheses, references),
        "chrf": chrf(hypotheses, references),
        "exact_match": exact_match(hypotheses, references),
    }
