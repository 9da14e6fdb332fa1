"""Fine-tuning batches for the QA and token-classification heads, with a checkpoint's tokenizer.json.

    records = read_squad_jsonl("train.jsonl")   # {"question", "context", "answers": {"text", "answer_start"}}
    batch = qa_features(tokenizer, records, max_seq_len=384, doc_stride=128)
    records = read_conll_jsonl("train.jsonl")   # {"tokens": [...], "tags": [...]}
    batch = tagging_features(tokenizer, records, labels, max_seq_len=128)

Both give numpy batches as `jaxformer.train.tasks.forward` takes them (tokens, token_type_ids,
weights, and start_positions/end_positions [N] or labels [N, W]), padded with `pad_id` to W =
max_seq_len. The recipes are those of transformers' run_qa / run_ner examples: a long context is
cut into windows of the context sharing `doc_stride` tokens, each with the whole question; a window
that does not hold the whole answer (and an unanswerable question) points at token 0 ([CLS]); a
word's label goes on its first token, the other tokens and special tokens get -100 (ignored).
`tokenizer`: a `tokenizers.Tokenizer` (e.g. `jaxformer.hf.load_tokenizer(path)`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from jaxformer.data.errors import DataError
from jaxformer.data.files import json_objects

IGNORED = -100


@dataclasses.dataclass(frozen=True)
class QARecord:
    question: str
    context: str
    answer_start: int | None  # character of the first answer in the context; None: unanswerable
    answer_text: str = ""


@dataclasses.dataclass(frozen=True)
class TaggedRecord:
    tokens: tuple[str, ...]  # words
    tags: tuple[str | int, ...]  # one per word


def _json_lines(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    out = list(json_objects(path))
    if not out:
        raise DataError(f"jsonl file {str(path)!r} has no records.")
    return out


def read_squad_jsonl(path: str | Path) -> list[QARecord]:
    """SQuAD-style records: question, context, answers {"text": [...], "answer_start": [...]} (the first is used;
    empty lists: unanswerable, SQuAD 2.0). The answer text must be at answer_start in the context."""
    records = []
    for where, obj in _json_lines(path):
        missing = [k for k in ("question", "context", "answers") if k not in obj]
        if missing:
            raise DataError(f"{where} lacks keys {missing} (keys: {sorted(obj)}); SQuAD records need all three.")
        question, context, answers = obj["question"], obj["context"], obj["answers"]
        if not isinstance(question, str) or not isinstance(context, str) or not isinstance(answers, dict):
            raise DataError(f'{where}: question and context must be strings, answers {{"text": [...], ...}}.')
        texts, starts = answers.get("text", []), answers.get("answer_start", [])
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError(f"{where}: answers.text and answers.answer_start must be lists of the same length.")
        if not texts:
            records.append(QARecord(question, context, None))
            continue
        text, start = texts[0], starts[0]
        if not isinstance(start, int) or context[start : start + len(str(text))] != text:
            raise DataError(f"{where}: the answer {text!r} is not at character {start!r} of the context.")
        records.append(QARecord(question, context, start, text))
    return records


def read_conll_jsonl(path: str | Path) -> list[TaggedRecord]:
    """CoNLL-style records: {"tokens": [words], "tags": [one label (name or id) per word]}."""
    records = []
    for where, obj in _json_lines(path):
        tokens, tags = obj.get("tokens"), obj.get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(f'{where}: needs "tokens" (a list of words) and "tags" (a list of labels).')
        if len(tokens) != len(tags):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag per token.")
        records.append(TaggedRecord(tuple(tokens), tuple(tags)))
    return records


def _windows(tokenizer: Tokenizer, question: str, context: str, max_seq_len: int, doc_stride: int) -> list[Any]:
    cutter = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's tokenizer keeps its settings
    cutter.no_padding()
    cutter.enable_truncation(max_seq_len, stride=doc_stride, strategy="only_second")
    try:
        first = cutter.encode(question, context, add_special_tokens=True)
    except Exception as err:  # tokenizers raises a plain Exception (the question leaves no room)
        raise DataError(
            f"cannot cut a context into windows of {max_seq_len} tokens ({' '.join(str(err).split())}); "
            "raise max_seq_len or lower doc_stride."
        ) from None
    return [first, *first.overflowing]


def answer_positions(encoding: Any, record: QARecord) -> tuple[int, int]:
    """(start, end) token of the answer in this window; (0, 0) when the window lacks (part of) it."""
    if record.answer_start is None:
        return 0, 0
    first_char, last_char = record.answer_start, record.answer_start + len(record.answer_text)  # [first, last)
    context = [i for i, s in enumerate(encoding.sequence_ids) if s == 1]
    if not context:
        return 0, 0
    offsets = encoding.offsets
    if offsets[context[0]][0] > first_char or offsets[context[-1]][1] < last_char:
        return 0, 0
    start = max(i for i in context if offsets[i][0] <= first_char)  # the token holding the first character
    end = min(i for i in context if offsets[i][1] >= last_char)  # the token holding the last character
    return start, end


def _pad(rows: Sequence[Sequence[int]], width: int, value: int) -> np.ndarray:
    out = np.full((len(rows), width), value, np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def qa_features(
    tokenizer: Tokenizer, records: Sequence[QARecord], max_seq_len: int = 384, doc_stride: int = 128, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """One row per window: tokens, token_type_ids [N, max_seq_len], start_positions, end_positions, weights [N]."""
    windows, starts, ends = [], [], []
    for record in records:
        for encoding in _windows(
            tokenizer, record.question, record.context, max_seq_len, min(doc_stride, max_seq_len // 2)
        ):
            start, end = answer_positions(encoding, record)
            windows.append(encoding)
            starts.append(start)
            ends.append(end)
    return {
        "tokens": _pad([w.ids for w in windows], max_seq_len, pad_id),
        "token_type_ids": _pad([w.type_ids for w in windows], max_seq_len, 0),
        "start_positions": np.array(starts, np.int32),
        "end_positions": np.array(ends, np.int32),
        "weights": np.ones(len(windows), np.float32),
    }


def tagging_features(
    tokenizer: Tokenizer,
    records: Sequence[TaggedRecord],
    labels: Sequence[str | int],
    max_seq_len: int = 128,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
    """tokens [N, max_seq_len], labels (class ids; -100 off each word's first token), weights (1 where labelled)."""
    index = {label: i for i, label in enumerate(labels)}
    rows, targets = [], []
    for number, record in enumerate(records):
        unknown = sorted({str(t) for t in record.tags if t not in index})
        if unknown:
            raise DataError(f"record {number} has tags {unknown} outside labels {list(labels)}.")
        encoding = tokenizer.encode(list(record.tokens), is_pretokenized=True, add_special_tokens=True)
        if len(encoding.ids) > max_seq_len:
            raise DataError(
                f"record {number} is {len(encoding.ids)} tokens long but max_seq_len={max_seq_len}; raise it."
            )
        previous, row = None, []
        for word in encoding.word_ids:
            row.append(IGNORED if word is None or word == previous else index[record.tags[word]])
            previous = word
        rows.append(encoding.ids)
        targets.append(row)
    label_ids = _pad(targets, max_seq_len, IGNORED)
    return {
        "tokens": _pad(rows, max_seq_len, pad_id),
        "token_type_ids": np.zeros((len(rows), max_seq_len), np.int32),
        "labels": label_ids,
        "weights": (label_ids != IGNORED).astype(np.float32),
    }
