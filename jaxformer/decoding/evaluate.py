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

import numpy as np

from jaxformer.decoding.metrics import bleu, chrf, exact_match
from jaxformer.decoding.texts import bucket

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


# Teacher-forced batches of given texts (evaluating a checkpoint on a file) ------------------------


def _columns(rows: list[list[int]], batch: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """rows -> (ids [batch, W], segment ids [batch, W]: 1 on real tokens); W a power of two (at most `cap`, the
    model's max_len, which no row exceeds); a missing row gets one real token (weight 0), so no attention is empty."""
    rows = rows + [[0]] * (batch - len(rows))
    width = min(bucket(max(len(r) for r in rows)), cap)
    ids, segments = np.zeros((batch, width), np.int32), np.zeros((batch, width), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)], segments[i, : len(row)] = row, 1
    return ids, segments


def lm_batch(rows: list[list[int]], batch: int, cap: int) -> dict[str, np.ndarray]:
    """Next-token prediction over each row: tokens = ids[:-1], targets = ids[1:]."""
    ids, segments = _columns([r[:-1] or r for r in rows], batch, cap)
    targets, _ = _columns([r[1:] or r for r in rows], batch, cap)
    weights = np.zeros(ids.shape, np.float32)
    for i, row in enumerate(rows):
        weights[i, : len(row) - 1] = 1.0
    positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape).copy()
    return {"tokens": ids, "targets": targets, "weights": weights, "segment_ids": segments, "positions": positions}


def seq2seq_batch(
    sources: list[list[int]], targets: list[list[int]], start_id: int, batch: int, cap: int
) -> dict[str, np.ndarray]:
    """Teacher forcing: the decoder reads [start] + reference[:-1] and predicts the reference."""
    source, source_segments = _columns(sources, batch, cap)
    target_in, target_segments = _columns([[start_id, *t[:-1]] for t in targets], batch, cap)
    target_out, _ = _columns(targets, batch, cap)
    weights = (target_segments > 0).astype(np.float32)
    weights[len(targets) :] = 0.0
    return {
        "source": source,
        "target_in": target_in,
        "targets": target_out,
        "weights": weights,
        "source_segment_ids": source_segments,
        "target_segment_ids": target_segments,
        "source_positions": np.broadcast_to(np.arange(source.shape[1], dtype=np.int32), source.shape).copy(),
        "target_positions": np.broadcast_to(np.arange(target_in.shape[1], dtype=np.int32), target_in.shape).copy(),
    }
