"""Synthetic digit-string tasks that need no download and are learned to ~100% in minutes on a CPU.

seq2seq: "reverse" (531 -> 135), "sort" (531 -> 135), "copy" (531 -> 531).
classification "majority": label 1 when more digits are >= 5 than < 5, else 0 (ties are redrawn),
a linear function of the digit histogram that an encoder with a pooled first token learns quickly.

Held-out splits never overlap training: every input string belongs to exactly one split by
the CRC-32 of its text (0 -> validation, 1 -> test, else train, modulo 10), and each split is
drawn from its own random stream. Training examples are drawn for (seed, epoch): a fixed set
when `num_train_examples` > 0, fresh examples every epoch when it is 0.
"""

from __future__ import annotations

import zlib

import numpy as np

from jaxformer.data.errors import DataError

SPLIT_BUCKET = {"validation": 0, "test": 1}
NUM_BUCKETS = 10
EPOCH_SIZE = 10_000  # examples per epoch when generation is infinite
EVAL_STREAM_SEED = 20_170_612  # held-out splits do not depend on the experiment seed
_SALT = {"train": 1, "validation": 2, "test": 3}


def split_of(text: str) -> str:
    """The split a digit string belongs to ("train", "validation" or "test")."""
    bucket = zlib.crc32(text.encode("ascii")) % NUM_BUCKETS
    for split, value in SPLIT_BUCKET.items():
        if bucket == value:
            return split
    return "train"


def target_of(task: str, digits: str) -> str | int:
    """The answer for input `digits`: a string (seq2seq) or a class id (majority)."""
    if task == "reverse":
        return digits[::-1]
    if task == "sort":
        return "".join(sorted(digits))
    if task == "copy":
        return digits
    if task == "majority":
        high = sum(c >= "5" for c in digits)
        return int(high > len(digits) - high)
    raise DataError(f"synthetic_task={task!r} is unknown; choose reverse, sort, copy or majority.")


def generate(
    task: str, split: str, count: int, min_length: int, max_length: int, seed: int, epoch: int = 0
) -> list[tuple]:
    """`count` records (input, target) of `split`, deterministic in (seed, epoch)."""
    stream_seed = seed if split == "train" else EVAL_STREAM_SEED
    rng = np.random.default_rng([stream_seed, _SALT[split], epoch])
    records: list[tuple] = []
    drawn = 0
    limit = 200 * count + 10_000
    while len(records) < count:
        if drawn > limit:
            raise DataError(
                f"could not draw {count} distinct-split synthetic examples of lengths {min_length}..{max_length} "
                f"for split {split!r}; raise data.synthetic_max_length (more possible strings)."
            )
        n = max(256, 2 * (count - len(records)) * (NUM_BUCKETS if split != "train" else 1))
        lengths = rng.integers(min_length, max_length + 1, size=n)
        digits = rng.integers(0, 10, size=(n, max_length)).astype(np.uint8) + ord("0")
        drawn += n
        for row, length in zip(digits, lengths, strict=True):
            text = row[:length].tobytes().decode("ascii")
            if split_of(text) != split:
                continue
            if task == "majority" and 2 * sum(c >= "5" for c in text) == len(text):
                continue  # a tie has no majority; draw another
            records.append((text, target_of(task, text)))
            if len(records) == count:
                break
    return records
