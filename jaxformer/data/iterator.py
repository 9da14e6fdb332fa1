"""The deterministic, resumable stream of training batches of one process.

Order: epoch e visits this process's examples in the permutation drawn from (seed, e) (or in
order when shuffling is off); epochs follow each other without a break.
Batching: "plain" takes the next B examples, one per row; "bucket" collects examples by
length bucket and emits a bucket once it holds B; "pack" draws examples until they hold `pool`
times the batch's token capacity, then places first the examples left over from the last
batch (in order, so none waits for long) and then the new ones largest first, each into the
first row with room (first-fit decreasing). Examples drawn but not placed ("pending") are
carried to the next batch.

State = (epoch, cursor, pending items, batches emitted): small JSON that restores the stream
exactly, because every decision is a pure function of the examples and that state. A state
saved by another process (multi-process checkpoints often keep only process 0's) is restored
by replaying the plan of `batches` batches from the start, which is exact too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from jaxformer.data.batching import Example, build_batch
from jaxformer.data.encode import Examples
from jaxformer.data.errors import DataError

Item = tuple[int, int]  # (epoch, index among that epoch's examples of this process)
STATE_FORMAT = "jaxformer.data.iterator/1"


class ExampleProvider(Protocol):
    def examples(self, epoch: int) -> Examples: ...


class FixedExamples:
    """The same examples every epoch."""

    def __init__(self, examples: Examples) -> None:
        self._examples = examples

    def examples(self, epoch: int) -> Examples:
        return self._examples


class FreshExamples:
    """New examples for every epoch from `make(epoch)` (infinite synthetic data); keeps the last few."""

    def __init__(self, make: Callable[[int], Examples], keep: int = 3) -> None:
        self.make, self.keep = make, keep
        self.cache: dict[int, Examples] = {}

    def examples(self, epoch: int) -> Examples:
        if epoch not in self.cache:
            self.cache[epoch] = self.make(epoch)
            for old in sorted(self.cache)[: -self.keep]:
                del self.cache[old]
        return self.cache[epoch]


def auto_boundaries(widths: tuple[int, ...]) -> tuple[int, ...]:
    """Quarters of the longest width, rounded up to multiples of 8, ending at the width itself."""
    longest = max(widths)
    return tuple(sorted({min(longest, 8 * math.ceil(longest * q / 32)) for q in (1, 2, 3)} | {longest}))


class BatchStream:
    """Training batches of one process; see the module docstring."""

    def __init__(
        self,
        provider: ExampleProvider,
        task: str,
        mode: str,
        rows: int,
        widths: tuple[int, ...],
        seed: int,
        shuffle: bool,
        segments: bool,
        pool: float = 1.1,
        boundaries: tuple[int, ...] = (),
    ) -> None:
        if mode not in ("plain", "bucket", "pack"):
            raise ValueError(f"mode={mode!r} must be 'plain', 'bucket' or 'pack'.")
        self.provider, self.task, self.mode, self.rows = provider, task, mode, rows
        self.widths, self.seed, self.shuffle, self.segments = widths, seed, shuffle, segments
        self.pool = pool
        self.boundaries = boundaries or auto_boundaries(widths)
        self.epoch = self.cursor = self.batches = 0
        self.pending: list[Item] = []
        self._order: tuple[int, np.ndarray] | None = None

    # Position -------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "cursor": self.cursor,
            "pending": [list(item) for item in self.pending],
            "batches": self.batches,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise DataError(f"data iterator state has format {state.get('format')!r}, expected {STATE_FORMAT!r}.")
        self.epoch, self.cursor, self.batches = int(state["epoch"]), int(state["cursor"]), int(state["batches"])
        self.pending = [(int(e), int(i)) for e, i in state["pending"]]

    def replay(self, batches: int) -> None:
        """Move to the position after `batches` batches from the start, planning without building arrays."""
        self.epoch = self.cursor = self.batches = 0
        self.pending = []
        for _ in range(batches):
            self.next_plan()

    # Batches --------------------------------------------------------------
    def next_batch(self) -> dict[str, np.ndarray]:
        rows, widths = self.next_plan()
        return build_batch(self.task, [[self.example(item) for item in row] for row in rows], widths, self.segments)

    def next_plan(self) -> tuple[list[list[Item]], tuple[int, ...]]:
        if self.mode == "plain":
            rows, widths = [[self.pull()] for _ in range(self.rows)], self.widths
        elif self.mode == "bucket":
            rows, widths = self._plan_bucket()
        else:
            rows, widths = self._plan_pack(), self.widths
        self.batches += 1
        return rows, widths

    def example(self, item: Item) -> Example:
        return self.provider.examples(item[0]).get(item[1])

    def pull(self) -> Item:
        """The next item of the epoch order, moving to the next epoch at the end."""
        while True:
            order = self._epoch_order(self.epoch)
            if self.cursor < len(order):
                item = (self.epoch, int(order[self.cursor]))
                self.cursor += 1
                return item
            self.epoch, self.cursor = self.epoch + 1, 0

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            n = len(self.provider.examples(epoch))
            if n == 0:
                raise DataError("the training split of this process is empty.")
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order = (epoch, order)
        return self._order[1]

    def _size(self, item: Item) -> np.ndarray:
        return self.provider.examples(item[0]).sizes[item[1]]

    def _plan_bucket(self) -> tuple[list[list[Item]], tuple[int, ...]]:
        buckets: dict[int, list[Item]] = {}
        for item in self.pending:
            buckets.setdefault(self._bucket(item), []).append(item)
        while True:
            item = self.pull()
            bucket = buckets.setdefault(self._bucket(item), [])
            bucket.append(item)
            if len(bucket) == self.rows:
                full = self._bucket(item)
                del buckets[full]
                break
        self.pending = [item for key in sorted(buckets) for item in buckets[key]]
        width = self.boundaries[full]
        return [[item] for item in bucket], tuple(min(width, w) for w in self.widths)

    def _bucket(self, item: Item) -> int:
        longest = int(self._size(item).max())
        for index, boundary in enumerate(self.boundaries):
            if longest <= boundary:
                return index
        return len(self.boundaries) - 1

    def _plan_pack(self) -> list[list[Item]]:
        rows_count, two_parts = self.rows, len(self.widths) > 1
        width0, width1 = self.widths[0], self.widths[1] if two_parts else 0
        free0, free1 = [width0] * rows_count, [width1] * rows_count  # room left in each row (source, target)
        rows: list[list[Item]] = [[] for _ in range(rows_count)]
        deferred: list[Item] = []

        def sized(item: Item) -> tuple[Item, int, int]:
            lists = self.provider.examples(item[0]).size_lists
            return item, lists[0][item[1]], lists[1][item[1]] if two_parts else 0

        def place(item: Item, size0: int, size1: int) -> None:
            for r in range(rows_count):  # first fit
                if free0[r] >= size0 and free1[r] >= size1:
                    rows[r].append(item)
                    free0[r] -= size0
                    free1[r] -= size1
                    return
            deferred.append(item)

        carried = [sized(item) for item in self.pending]
        total0, total1 = sum(c[1] for c in carried), sum(c[2] for c in carried)
        capacity0 = self.pool * rows_count * width0
        capacity1 = self.pool * rows_count * width1 if two_parts else float("inf")
        drawn: list[tuple[Item, int, int]] = []
        while total0 < capacity0 and total1 < capacity1:
            drawn.append(sized(self.pull()))
            total0, total1 = total0 + drawn[-1][1], total1 + drawn[-1][2]
        for entry in carried:
            place(*entry)
        drawn.sort(key=lambda entry: -(entry[1] + entry[2]))  # largest first; stable
        for entry in drawn:
            place(*entry)
        self.pending = deferred
        return rows
