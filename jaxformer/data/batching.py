"""Rows of examples -> a batch of NumPy arrays (int32; weights float32), padded with id 0.

A row is a list of examples (one without packing, several with it; an empty row is padding).
An example is (inputs, targets, label) as stored by `encode.Examples`; for lm it is (piece,
per-target weights or None, None): weights [len(piece) - 1] (instruction tuning: 1 on completion
tokens), None = every target has weight 1.

decoder_only (lm)          tokens, targets, weights                       [B, L]
encoder_decoder (seq2seq)  source [B, S]; target_in, targets, weights     [B, T]
encoder_only (classif.)    tokens [B, L]; labels, weights                 [B]
With `segments=True`: positions/segment_ids (lm) or source_/target_positions and
source_/target_segment_ids (seq2seq); segments count from 1 in each row, 0 marks padding,
positions restart at 0 in every segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxformer.data.tokenizers import BOS_ID, PAD_ID

Example = tuple[np.ndarray, "np.ndarray | None", "int | None"]
TASK_OF_FAMILY = {"decoder_only": "lm", "encoder_decoder": "seq2seq", "encoder_only": "classification"}


def build_batch(
    task: str, rows: Sequence[Sequence[Example]], widths: tuple[int, ...], segments: bool
) -> dict[str, np.ndarray]:
    """Arrays for `rows`; widths is (L,) or (S, T)."""
    if task == "lm":
        return _lm_batch(rows, widths[0], segments)
    if task == "seq2seq":
        return _seq2seq_batch(rows, widths[0], widths[1], segments)
    return _classification_batch(rows, widths[0])


def _zeros(batch: int, width: int) -> np.ndarray:
    return np.full((batch, width), PAD_ID, np.int32)


class _Layout:
    """Where the tokens of a row-major list of examples land: flat token t goes to [row[t], column[t]],
    is at position[t] within its example, whose segment number in the row is segment[t]."""

    def __init__(self, row_of: list[int], segment_of: list[int], lengths: list[int]) -> None:
        lengths_np = np.asarray(lengths, np.int64)
        ends = np.cumsum(lengths_np)
        self.starts = ends - lengths_np  # flat index of each example's first token
        rows = np.asarray(row_of, np.int64)
        first_in_row = np.ones(len(rows), bool)
        first_in_row[1:] = rows[1:] != rows[:-1]
        row_base = np.maximum.accumulate(np.where(first_in_row, self.starts, 0))  # flat start of the example's row
        example = np.repeat(np.arange(len(rows)), lengths_np)  # [tokens] example of each token
        self.position = (np.arange(int(ends[-1])) - self.starts[example]).astype(np.int32)
        self.row = rows[example]
        self.column = (self.starts - row_base)[example] + self.position
        self.segment = np.asarray(segment_of, np.int32)[example]

    def scatter(self, out: np.ndarray, values: np.ndarray | float) -> np.ndarray:
        out[self.row, self.column] = values
        return out


def _collect(rows: Sequence[Sequence[Example]]) -> tuple[list[Example], list[int], list[int]]:
    """Examples in row-major order with their row and their segment number (from 1) in the row."""
    examples, row_of, segment_of = [], [], []
    for r, row in enumerate(rows):
        for segment, example in enumerate(row, start=1):
            examples.append(example)
            row_of.append(r)
            segment_of.append(segment)
    return examples, row_of, segment_of


def _lm_batch(rows: Sequence[Sequence[Example]], width: int, segments: bool) -> dict[str, np.ndarray]:
    batch = len(rows)
    tokens, targets, positions, segment_ids = (_zeros(batch, width) for _ in range(4))
    weights = np.zeros((batch, width), np.float32)
    examples, row_of, segment_of = _collect(rows)
    if examples:
        pieces = [piece for piece, _, _ in examples]
        layout = _Layout(row_of, segment_of, [len(piece) - 1 for piece in pieces])
        layout.scatter(tokens, np.concatenate([piece[:-1] for piece in pieces]))
        layout.scatter(targets, np.concatenate([piece[1:] for piece in pieces]))
        layout.scatter(positions, layout.position)
        layout.scatter(segment_ids, layout.segment)
        masks = [mask for _, mask, _ in examples]
        if all(mask is None for mask in masks):
            layout.scatter(weights, 1.0)
        else:
            flat = [np.ones(len(p) - 1, np.float32) if m is None else m for p, m in zip(pieces, masks, strict=True)]
            layout.scatter(weights, np.concatenate(flat).astype(np.float32))
    out = {"tokens": tokens, "targets": targets, "weights": weights}
    if segments:
        out.update(positions=positions, segment_ids=segment_ids)
    return out


def _seq2seq_batch(
    rows: Sequence[Sequence[Example]], source_width: int, target_width: int, segments: bool
) -> dict[str, np.ndarray]:
    batch = len(rows)
    source, source_positions, source_segments = (_zeros(batch, source_width) for _ in range(3))
    target_in, targets, target_positions, target_segments = (_zeros(batch, target_width) for _ in range(4))
    weights = np.zeros((batch, target_width), np.float32)
    examples, row_of, segment_of = _collect(rows)
    if examples:
        sources = [src for src, _, _ in examples]
        target_list: list[np.ndarray] = [tgt for _, tgt, _ in examples if tgt is not None]
        src_layout = _Layout(row_of, segment_of, [len(s) for s in sources])
        tgt_layout = _Layout(row_of, segment_of, [len(t) for t in target_list])
        src_layout.scatter(source, np.concatenate(sources))
        src_layout.scatter(source_positions, src_layout.position)
        src_layout.scatter(source_segments, src_layout.segment)
        flat_targets = np.concatenate(target_list)
        flat_inputs = np.empty_like(flat_targets)  # bos + each target shifted right by one
        flat_inputs[1:] = flat_targets[:-1]
        flat_inputs[tgt_layout.starts] = BOS_ID
        tgt_layout.scatter(targets, flat_targets)
        tgt_layout.scatter(target_in, flat_inputs)
        tgt_layout.scatter(target_positions, tgt_layout.position)
        tgt_layout.scatter(target_segments, tgt_layout.segment)
        tgt_layout.scatter(weights, 1.0)
    out = {"source": source, "target_in": target_in, "targets": targets, "weights": weights}
    if segments:
        out.update(
            source_positions=source_positions,
            source_segment_ids=source_segments,
            target_positions=target_positions,
            target_segment_ids=target_segments,
        )
    return out


def _classification_batch(rows: Sequence[Sequence[Example]], width: int) -> dict[str, np.ndarray]:
    batch = len(rows)
    tokens = _zeros(batch, width)
    labels = np.zeros((batch,), np.int32)
    weights = np.zeros((batch,), np.float32)
    for r, row in enumerate(rows):
        if row:
            (inputs, _, label), *rest = row
            assert not rest, "classification rows hold one example"
            tokens[r, : len(inputs)] = inputs
            labels[r] = int(label or 0)
            weights[r] = 1.0
    return {"tokens": tokens, "labels": labels, "weights": weights}
