"""`build_pipeline(config, family=..., batch_size=..., seed=...)` -> `Pipeline`: tokenizer and batches.

Flow: records of each split (`sources`) -> tokenizer trained/loaded on the training text
(`tokenizer_factory`) -> token-id examples with the length policy (`encode`) -> this process's
share of the training examples -> batches (`iterator.BatchStream`: shuffle per epoch, plain /
bucketed / packed rows) -> a background prefetch thread (`prefetch`).

`batch_size` is global: each of `process_count` processes gets `batch_size // process_count`
rows. Training examples are dealt to processes round-robin (equal counts); evaluation batches
are global batches of which each process builds its own rows, so all processes see the same
number of evaluation batches, and rows past the end of the split have weight 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from jaxformer.data import synthetic
from jaxformer.data.batching import TASK_OF_FAMILY, build_batch
from jaxformer.data.config import DataConfig
from jaxformer.data.encode import Examples, encode_split
from jaxformer.data.errors import DataError
from jaxformer.data.instruct import encode_instruct, segment_texts
from jaxformer.data.iterator import BatchStream, FixedExamples, FreshExamples
from jaxformer.data.prefetch import Prefetcher
from jaxformer.data.records import ListRecords, RawSplit
from jaxformer.data.sources import SPLITS, load_split
from jaxformer.data.tokenizer_factory import build_tokenizer
from jaxformer.data.tokenizers import BOS_ID, EOS_ID, Tokenizer

log = logging.getLogger("jaxformer.data")

# Settings that change the training stream: a saved state only fits a pipeline with the same values.
_STREAM_FIELDS = (
    "source", "task", "synthetic_task", "synthetic_min_length", "synthetic_max_length", "num_train_examples",
    "max_train_examples", "train_path", "source_suffix", "target_suffix", "text_unit", "holdout_fraction",
    "tfds_name", "hf_path", "train_split", "tokenizer", "vocab_size", "tokenizer_path", "max_length",
    "max_source_length", "max_target_length", "truncate", "shuffle", "pack", "pack_pool",
    "bucket_by_length", "bucket_boundaries", "prompt_field", "completion_field", "messages_field",
    "chat_template_path", "header_pattern", "top_labels", "num_blocks", "eval_block_every",
)  # fmt: skip


def build_pipeline(
    config: DataConfig,
    *,
    family: str,
    batch_size: int,
    seed: int,
    workdir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
    tokenizer: Tokenizer | None = None,
) -> Pipeline:
    """The input pipeline for a model of `family` trained with global `batch_size`.

    `tokenizer`: use this one (the run's stored tokenizer, see `tokenizer_store`) instead of building it.
    """
    if not isinstance(config, DataConfig):
        raise TypeError(f"build_pipeline expects a DataConfig, got {type(config).__name__}.")
    if family not in TASK_OF_FAMILY:
        raise DataError(f"family={family!r} is unknown; choose one of {sorted(TASK_OF_FAMILY)}.")
    if TASK_OF_FAMILY[family] != config.task:
        raise DataError(
            f"a {family} model trains task={TASK_OF_FAMILY[family]!r} but data.task={config.task!r}; "
            f"set data.task={TASK_OF_FAMILY[family]!r} or choose a model preset of the matching family."
        )
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} must be in [0, process_count={process_count}).")
    if batch_size < process_count or batch_size % process_count:
        raise DataError(f"batch_size={batch_size} must be a positive multiple of process_count={process_count}.")
    return Pipeline(config, family, batch_size, seed, workdir, process_index, process_count, tokenizer)


class Pipeline:
    """Tokenizer, training batches (infinite, resumable), evaluation batches and text examples."""

    def __init__(
        self,
        config: DataConfig,
        family: str,
        batch_size: int,
        seed: int,
        workdir: str | None,
        process_index: int,
        process_count: int,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.config, self.family, self.task, self.seed = config, family, config.task, seed
        self.global_batch_size, self.batch_size = batch_size, batch_size // process_count
        self.process_index, self.process_count = process_index, process_count
        if config.task == "seq2seq":
            self.widths: tuple[int, ...] = (config.length("max_source_length"), config.length("max_target_length"))
        else:
            self.widths = (config.max_length,)
        self.infinite = config.source == "synthetic" and config.num_train_examples == 0
        self._raw: dict[str, RawSplit | None] = {}
        self._examples: dict[str, Examples] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self.tokenizer: Tokenizer = tokenizer or build_tokenizer(
            config, self._training_texts, workdir, process_index, process_count
        )
        self.vocab_size = self.tokenizer.vocab_size
        if self.infinite:
            provider: Any = FreshExamples(self._fresh_examples)
            train = provider.examples(0)
        else:
            train = self.split_examples("train")
            provider = FixedExamples(train.shard(process_index, process_count))
        self.num_classes = self._num_classes(train) if config.task == "classification" else None
        if self._optional_raw("validation") is not None:  # bad evaluation data fails now, not at the first eval
            self.split_examples("validation")
        mode = "pack" if config.pack else "bucket" if config.bucket_by_length else "plain"
        self._stream_args = dict(
            provider=provider, task=self.task, mode=mode, rows=self.batch_size, widths=self.widths, seed=seed,
            shuffle=config.shuffle, segments=config.pack, pool=config.pack_pool, boundaries=config.bucket_boundaries,
        )  # fmt: skip
        self._position = BatchStream(**self._stream_args).state()  # after the last batch handed out
        self._iterator: _TrainIterator | None = None

    # Training -------------------------------------------------------------
    def train_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Infinite batches from the current position (start, or the state given to `set_state`)."""
        self.close()
        stream = BatchStream(**self._stream_args)
        stream.restore(self._position)
        self._iterator = _TrainIterator(self, stream, self.config.prefetch)
        return self._iterator

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position after the last training batch handed out."""
        return {
            **self._position,
            "seed": self.seed,
            "batch_size": self.global_batch_size,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "config": {name: _jsonable(getattr(self.config, name)) for name in _STREAM_FIELDS},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue `train_batches()` exactly where the iterator that produced `state` was."""
        self.close()
        mine = self.get_state()
        for key in ("seed", "batch_size", "process_count"):
            if state.get(key) != mine[key]:
                raise DataError(
                    f"the saved data state has {key}={state.get(key)!r} but this run has {key}={mine[key]!r}; "
                    "the batch order would differ, so it cannot resume exactly. Use the original value."
                )
        saved_config = state.get("config", {})
        changed = sorted(k for k in mine["config"] if k in saved_config and saved_config[k] != mine["config"][k])
        if changed:
            diffs = ", ".join(f"data.{k}: {saved_config[k]!r} -> {mine['config'][k]!r}" for k in changed)
            raise DataError(
                f"the data config changed since the state was saved ({diffs}); resuming would not be exact."
            )
        stream = BatchStream(**self._stream_args)
        if state.get("process_index") == self.process_index:
            stream.restore(state)
        else:  # another process's state: same batch count, our own stream
            stream.replay(int(state["batches"]))
        self._position = stream.state()

    def close(self) -> None:
        """Stop the prefetch thread of the current training iterator, if any."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None

    # Evaluation -----------------------------------------------------------
    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        """The whole split once, in order; the last batch is padded with weight-0 rows."""
        examples = self.split_examples(split)
        n, rows, start = len(examples), self.batch_size, self.process_index * self.batch_size
        for first in range(0, n, self.global_batch_size):
            indices = range(first + start, first + start + rows)
            batch_rows = [[examples.get(i)] if i < n else [] for i in indices]
            yield build_batch(self.task, batch_rows, self.widths, self.config.pack)

    def num_eval_batches(self, split: str = "validation") -> int:
        return -(-len(self.split_examples(split)) // self.global_batch_size)

    def examples(self, split: str, n: int) -> list[tuple[str, str]]:
        """(input text, reference text) of the first `n` examples of `split`. For lm: (first half, second half)."""
        if self.task == "lm":
            examples = self.split_examples(split)
            out = []
            for i in range(min(n, len(examples))):
                piece = examples.inputs[i]
                half = max(1, len(piece) // 2)
                out.append((self.tokenizer.decode(piece[:half]), self.tokenizer.decode(piece[half:])))
            return out
        records = self._raw_split(split).head(n)
        return [(r[0], r[1] if isinstance(r[1], str) else str(r[1])) for r in records]

    def encode_input(self, text: str) -> list[int]:
        """Model input ids for `text`, as in training: seq2seq source + eos; classification bos + text + eos;
        lm bos + text (a prompt)."""
        ids = self.tokenizer.encode(text)
        if self.task == "seq2seq":
            return [*ids[: self.widths[0] - 1], EOS_ID]
        if self.task == "classification":
            return [BOS_ID, *ids[: self.widths[0] - 2], EOS_ID]
        return [BOS_ID, *ids][-self.widths[0] :]

    def split_examples(self, split: str) -> Examples:
        """All encoded examples of `split` (every process holds the whole split)."""
        if split not in self._examples:
            raw = self._raw_split(split)
            if self.config.source == "instruct":
                examples = encode_instruct(raw, self.tokenizer, self.widths[0], self.config.truncate)
            else:
                examples = encode_split(raw, self.task, self.tokenizer, self.widths, self.config.truncate)
            self.stats[split] = {"records": len(raw), "examples": len(examples), "truncated": examples.truncated}
            self._examples[split] = examples
        return self._examples[split]

    # Internals ------------------------------------------------------------
    def _raw_split(self, split: str) -> RawSplit:
        if split not in SPLITS:
            raise DataError(f"split {split!r} is unknown; choose one of {list(SPLITS)}.")
        if split == "train" and self.infinite:
            return self._fresh_raw(0)
        raw = self._optional_raw(split)
        if raw is None:
            hint = {"validation": "data.eval_path (or data.holdout_fraction)", "test": "data.test_path"}.get(
                split, "data.train_path"
            )
            raise DataError(f"the data config provides no {split!r} split; set {hint}.")
        return raw

    def _optional_raw(self, split: str) -> RawSplit | None:
        if split not in self._raw:
            self._raw[split] = load_split(self.config, split, self.seed)
        return self._raw[split]

    def _training_texts(self) -> Iterable[str]:
        raw = self._raw_split("train")
        for _, records in raw.chunks():
            for record in records:
                if self.config.source == "instruct":
                    yield from segment_texts(record)
                elif self.task == "lm":
                    yield record
                else:
                    yield record[0]
                    if self.task == "seq2seq":
                        yield record[1]

    def _fresh_raw(self, epoch: int) -> RawSplit:
        c = self.config
        records = synthetic.generate(
            c.synthetic_task,
            "train",
            synthetic.EPOCH_SIZE,
            c.synthetic_min_length,
            c.synthetic_max_length,
            self.seed,
            epoch,
        )
        return RawSplit("train", ListRecords(records), lambda i: f"synthetic train example {i} of epoch {epoch}")

    def _fresh_examples(self, epoch: int) -> Examples:
        examples = encode_split(self._fresh_raw(epoch), self.task, self.tokenizer, self.widths, self.config.truncate)
        return examples.shard(self.process_index, self.process_count)

    def _num_classes(self, train: Examples) -> int:
        assert train.labels is not None
        seen = int(train.labels.max()) + 1
        if self.config.source == "synthetic":
            return max(2, seen)
        if self.config.num_classes and seen > self.config.num_classes:
            raise DataError(
                f"training labels go up to {seen - 1} but data.num_classes={self.config.num_classes}; raise it."
            )
        return self.config.num_classes or seen


class _TrainIterator(Iterator[dict[str, np.ndarray]]):
    """Batches of a `BatchStream` (prefetched); records the position after each batch handed out."""

    def __init__(self, pipeline: Pipeline, stream: BatchStream, depth: int) -> None:
        self.pipeline, self.closed = pipeline, False
        self.prefetcher = Prefetcher(lambda: (stream.next_batch(), stream.state()), depth)

    def __next__(self) -> dict[str, np.ndarray]:
        if self.closed:
            raise StopIteration
        batch, state = next(self.prefetcher)
        self.pipeline._position = state
        return batch

    def close(self) -> None:
        self.closed = True
        self.prefetcher.close()


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


__all__ = ["Pipeline", "build_pipeline"]
