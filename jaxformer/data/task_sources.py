"""The training pipeline of data.task="qa" / "token_classification": JSONL files -> fixed feature rows -> batches.

    pipeline = TaskPipeline(config, batch_size=8, seed=0, tokenizer=hf_tokenizer)

The features are those of `task_data` (transformers' run_qa / run_ner recipes; offsets need the
checkpoint's tokenizer.json, so `tokenizer` must be an `HFTokenizer`), in the run's id space: the
tokenizer.json's ids shifted as `HFTokenizer` shifts them (its pad/bos/eos -> 0/1/2, the others +3),
so they index the remapped embedding rows `model.init_from` gives the run (hf/finetune.py). Padding
is id 0 (PAD). Token classification's label names are the training split's tags, sorted
(`label_names`; the run stores them as labels.json for the HF export's id2label).

Rows per split: one per QA window / tagged sentence. Training batches deal a per-epoch permutation
(seeded by (seed, epoch)) in global batches; each process takes its slice. The state is the number
of batches handed out, so resuming replays the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError
from jaxformer.data.task_data import IGNORED, qa_features, read_conll_jsonl, read_squad_jsonl, tagging_features
from jaxformer.data.tokenizers import PAD_ID, HFTokenizer, Tokenizer

LABELS_FILE = "labels.json"  # a token-classification run's label names, in class-id order

_STATE_FIELDS = ("task", "train_path", "tokenizer_path", "max_length", "doc_stride", "shuffle")


class TaskPipeline:
    """Tokenizer, training batches (infinite, resumable) and evaluation batches of a head task."""

    def __init__(
        self,
        config: DataConfig,
        batch_size: int,
        seed: int,
        tokenizer: Tokenizer | None,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if tokenizer is None and config.tokenizer == "hf" and config.tokenizer_path:
            tokenizer = HFTokenizer(config.tokenizer_path)
        if not isinstance(tokenizer, HFTokenizer):
            raise DataError(
                f"data.task={config.task!r} needs a Hugging Face tokenizer.json (its offsets place the labels); "
                "start from a HF checkpoint with model.init_from (its tokenizer is used) or set data.tokenizer='hf'."
            )
        if not config.eval_path:
            raise DataError(f"data.task={config.task!r} needs data.eval_path (a JSONL file of the same records).")
        self.config, self.task, self.seed, self.tokenizer = config, config.task, seed, tokenizer
        self.family = "encoder_only"
        self.vocab_size = tokenizer.vocab_size
        self.global_batch_size, self.batch_size = batch_size, batch_size // process_count
        self.process_index, self.process_count = process_index, process_count
        self.label_names: list[str] | None = None
        if config.task == "token_classification":
            train_records = read_conll_jsonl(config.train_path or "")
            self.label_names = sorted({str(t) for r in train_records for t in r.tags})
        self.num_classes = None if self.label_names is None else len(self.label_names)
        self.features = {
            "train": self._features(config.train_path or ""),
            "validation": self._features(config.eval_path),
        }
        self.stats = {split: {"examples": len(f["weights"])} for split, f in self.features.items()}
        self._batches = 0

    def _features(self, path: str) -> dict[str, np.ndarray]:
        """Feature rows of one JSONL file, token ids in the run's (shifted) id space."""
        impl, width = self.tokenizer.impl, self.config.max_length
        if self.task == "qa":
            stride = min(self.config.doc_stride, width // 2)
            out = qa_features(impl, read_squad_jsonl(path), max_seq_len=width, doc_stride=stride, pad_id=-1)
        else:
            records = [dataclasses.replace(r, tags=tuple(str(t) for t in r.tags)) for r in read_conll_jsonl(path)]
            assert self.label_names is not None
            unknown = sorted({t for r in records for t in r.tags} - set(self.label_names))
            if unknown:
                raise DataError(f"{path!r} has tags {unknown} that the training split lacks ({self.label_names}).")
            out = tagging_features(impl, records, self.label_names, max_seq_len=width, pad_id=-1)
        tokens = out["tokens"]
        out["tokens"] = np.where(tokens >= 0, self.tokenizer.to_ours[np.maximum(tokens, 0)], PAD_ID).astype(np.int32)
        return out

    # Training -------------------------------------------------------------
    def train_batches(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            yield self._train_batch(self._batches)
            self._batches += 1

    def _train_batch(self, index: int) -> dict[str, np.ndarray]:
        n = len(self.features["train"]["weights"])
        first = index * self.global_batch_size + self.process_index * self.batch_size
        rows = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, n)
            order = np.random.default_rng((self.seed, epoch)).permutation(n) if self.config.shuffle else np.arange(n)
            rows.append(int(order[offset]))
        return {k: v[rows] for k, v in self.features["train"].items()}

    def get_state(self) -> dict[str, Any]:
        return {
            "batches": self._batches,
            "seed": self.seed,
            "batch_size": self.global_batch_size,
            "process_count": self.process_count,
            "config": {name: getattr(self.config, name) for name in _STATE_FIELDS},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mine = self.get_state()
        changed = [k for k in ("seed", "batch_size", "process_count", "config") if state.get(k) != mine[k]]
        if changed:
            raise DataError(
                f"the saved data state differs from this run in {changed}; resuming would not be exact. "
                "Use the original settings."
            )
        self._batches = int(state["batches"])

    def close(self) -> None:
        """Nothing runs in the background."""

    # Evaluation -----------------------------------------------------------
    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        """The split once, in order; rows past its end are padding with weight 0."""
        features = self._split(split)
        n = len(features["weights"])
        for first in range(0, n, self.global_batch_size):
            start = first + self.process_index * self.batch_size
            rows = np.arange(start, start + self.batch_size)
            inside = rows < n
            batch = {k: v[np.minimum(rows, n - 1)] for k, v in features.items()}
            batch["weights"] = batch["weights"] * inside.reshape((-1,) + (1,) * (batch["weights"].ndim - 1))
            if "labels" in batch:
                batch["labels"] = np.where(batch["weights"] > 0, batch["labels"], IGNORED)
            yield batch

    def num_eval_batches(self, split: str = "validation") -> int:
        return -(-len(self._split(split)["weights"]) // self.global_batch_size)

    def examples(self, split: str, n: int) -> list[tuple[str, str]]:
        return []  # no text samples: the metrics are the head's accuracies

    def _split(self, split: str) -> dict[str, np.ndarray]:
        if split not in self.features:
            raise DataError(f"data.task={self.task!r} has splits {sorted(self.features)}, not {split!r}.")
        return self.features[split]


__all__ = ["LABELS_FILE", "TaskPipeline"]
