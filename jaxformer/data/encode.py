"""Raw records -> token-id examples, with the length policy applied.

lm              a document becomes [bos] + ids + [eos], cut into pieces of at most L + 1 tokens
                with stride L (a row's tokens are piece[:-1], its targets piece[1:]), so every
                token after the first is predicted once and nothing is dropped.
seq2seq         inputs = source ids + [eos] (<= S), targets = target ids + [eos] (<= T);
                the decoder input is [bos] + target ids, built at batching time.
classification  inputs = [bos] + ids + [eos] (<= L), plus the label.
instruct        (task lm, `instruct.encode_instruct`) one piece per record, with `weights`: 1 where the
                next token is a completion / assistant token, else 0.

Over-long seq2seq/classification examples are truncated (keeping bos/eos) and counted, or
raise `SequenceTooLongError` naming the record, when `truncate` is False.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections.abc import Sequence

import numpy as np

from jaxformer.data.errors import DataError, SequenceTooLongError
from jaxformer.data.records import RawSplit
from jaxformer.data.tokenizers import BOS_ID, EOS_ID, Tokenizer

log = logging.getLogger("jaxformer.data")


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Variable-length int32 rows stored flat: row i is values[offsets[i]:offsets[i + 1]]."""

    values: np.ndarray  # [total] int32
    offsets: np.ndarray  # [n + 1] int64

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int] | np.ndarray]) -> Ragged:
        lengths = np.fromiter((len(r) for r in rows), np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(rows), np.int32, count=int(offsets[-1]))
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, indices: np.ndarray) -> Ragged:
        return Ragged.from_lists([self[int(i)] for i in indices])


@dataclasses.dataclass(frozen=True)
class Examples:
    """Encoded examples of one split. `sizes` [n, k]: tokens per row part (k=2 for seq2seq: source, target)."""

    task: str
    inputs: Ragged
    targets: Ragged | None
    labels: np.ndarray | None  # [n] int32
    record_index: np.ndarray  # [n] which raw record each example came from
    truncated: int = 0
    weights: Ragged | None = None  # lm: per-target loss weights (len(piece) - 1 each); None = all 1

    def __len__(self) -> int:
        return len(self.inputs)

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        if self.task == "lm":
            return (self.inputs.lengths - 1)[:, None]
        if self.task == "seq2seq":
            assert self.targets is not None
            return np.stack([self.inputs.lengths, self.targets.lengths], axis=1)
        return self.inputs.lengths[:, None]

    @functools.cached_property
    def size_lists(self) -> tuple[list[int], ...]:
        """`sizes` as one Python list per row part (fast scalar access for the packer)."""
        return tuple(self.sizes[:, k].tolist() for k in range(self.sizes.shape[1]))

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        """Example i as (inputs, targets or None, label or None); for lm the middle slot holds the
        per-target weights (None: every target counts)."""
        second = self.weights if self.task == "lm" else self.targets
        targets = None if second is None else second[i]
        label = None if self.labels is None else int(self.labels[i])
        return self.inputs[i], targets, label

    def shard(self, process_index: int, process_count: int) -> Examples:
        """Process `process_index`'s share: examples p, p + P, ..., the same count for every process."""
        per_process = len(self) // process_count
        if per_process == 0:
            raise DataError(
                f"the training split has {len(self)} examples, fewer than process_count={process_count}; use more data."
            )
        indices = process_index + process_count * np.arange(per_process)
        return Examples(
            self.task,
            self.inputs.take(indices),
            None if self.targets is None else self.targets.take(indices),
            None if self.labels is None else self.labels[indices],
            self.record_index[indices],
            self.truncated,
            None if self.weights is None else self.weights.take(indices),
        )


def encode_split(raw: RawSplit, task: str, tokenizer: Tokenizer, limits: tuple[int, ...], truncate: bool) -> Examples:
    """Encode every record of `raw`. limits: (L,) for lm/classification, (S, T) for seq2seq."""
    inputs: list[Sequence[int] | np.ndarray] = []
    targets: list[Sequence[int] | np.ndarray] = []
    labels: list[int] = []
    record_index: list[int] = []
    truncated = 0
    for start, records in raw.chunks():
        if task == "lm":
            for offset, ids in enumerate(tokenizer.encode_batch(records)):
                pieces = lm_pieces(ids, limits[0])
                inputs.extend(pieces)
                record_index.extend([start + offset] * len(pieces))
            continue
        encoded = tokenizer.encode_batch([r[0] for r in records])
        encoded_targets = tokenizer.encode_batch([r[1] for r in records]) if task == "seq2seq" else None
        for offset, ids in enumerate(encoded):
            where = raw.where(start + offset)
            if task == "seq2seq":
                assert encoded_targets is not None
                source, cut_source = _fit(
                    [*list(ids), EOS_ID], limits[0], truncate, where, "source", "max_source_length"
                )
                target, cut_target = _fit(
                    [*list(encoded_targets[offset]), EOS_ID], limits[1], truncate, where, "target", "max_target_length"
                )
                inputs.append(source)
                targets.append(target)
                truncated += cut_source or cut_target
            else:
                row, cut = _fit([BOS_ID, *ids, EOS_ID], limits[0], truncate, where, "text", "max_length")
                inputs.append(row)
                labels.append(int(records[offset][1]))
                truncated += cut
            record_index.append(start + offset)
    if not inputs:
        raise DataError(f"the {raw.name} split has no examples after encoding; check the data files.")
    if truncated:
        log.warning(
            "truncated %d of %d %s examples to the length limits %s (data.truncate=True)",
            truncated,
            len(inputs),
            raw.name,
            limits,
        )
    return Examples(
        task,
        Ragged.from_lists(inputs),
        Ragged.from_lists(targets) if task == "seq2seq" else None,
        np.asarray(labels, np.int32) if task == "classification" else None,
        np.asarray(record_index, np.int64),
        truncated,
    )


def lm_pieces(ids: Sequence[int], block: int) -> list[np.ndarray]:
    """[bos] + ids + [eos] cut into pieces of <= block + 1 tokens, consecutive pieces sharing one token."""
    sequence = np.asarray([BOS_ID, *ids, EOS_ID], np.int32)
    return [sequence[s : s + block + 1] for s in range(0, len(sequence) - 1, block)]


def _fit(ids: list[int], limit: int, truncate: bool, where: str, part: str, field: str) -> tuple[list[int], bool]:
    """`ids` cut to `limit` keeping its last (eos) token, and whether it was cut."""
    if len(ids) <= limit:
        return ids, False
    if not truncate:
        raise SequenceTooLongError(
            f"{where}: the {part} has {len(ids)} tokens (with special tokens), more than data.{field}={limit}; "
            f"raise data.{field} or set data.truncate=True to cut such examples (they are counted)."
        )
    return ids[: limit - 1] + ids[-1:], True
