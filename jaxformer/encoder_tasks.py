"""Question answering, labelled classification and token tagging with an encoder-only run (issue 22).

    answers = encoder_tasks.answer("path/to/qa_checkpoint", question, context, max_answer_length=30)
    encoder_tasks.classify_labels(run_or_dir, ["a text"])    # label names from the checkpoint's id2label
    encoder_tasks.tag(run_or_dir, "a sentence to tag")       # a label per word

The span rule is `jaxformer.decoding.spans` (transformers' question-answering pipeline rule);
character ranges come from the tokenizer.json offsets, so these need a Hugging Face checkpoint
(or a run exported with one). Runs and checkpoints load through `inference.as_run`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tokenizers import Tokenizer

from jaxformer.config import ModelConfig
from jaxformer.decoding import spans
from jaxformer.hf import files
from jaxformer.hf.tokenizer import CheckpointTokenizer
from jaxformer.inference import (
    EmptyInputError,
    InferenceError,
    InputTooLongError,
    Run,
    WrongFamilyError,
    as_run,
    check_int,
    check_texts,
    classify,
    require_family,
)
from jaxformer.models import build
from jaxformer.models.embeddings import max_tokens


@dataclasses.dataclass(frozen=True)
class Answer:
    """An answer span of the context: its text, characters [start, end), tokens, score and probability."""

    text: str
    start: int  # first character in the context
    end: int  # one past the last character
    score: float  # start_logit + end_logit
    probability: float  # softmax(start)[i] * softmax(end)[j] over the context tokens (the pipeline's score)
    start_token: int  # tokens of window `window` (0 unless the context was cut into windows)
    end_token: int
    window: int = 0


def _require_head(run: Run, head: str, function: str) -> None:
    require_family(run, "encoder_only", function)
    if run.config.encoder_head != head:
        what = {"qa": "a question-answering", "classification": "a sequence-classification"}
        needs = what.get(head, "a token-classification")
        raise WrongFamilyError(
            f"{function}() needs {needs} head (encoder_head={head!r}); {run.workdir} has "
            f"encoder_head={run.config.encoder_head!r}. Use a *For{_HEAD_CLASS[head]} checkpoint, or fine-tune one "
            f"(hf.finetune_init(path, encoder_head={head!r}))."
        )


_HEAD_CLASS = {
    "qa": "QuestionAnswering",
    "classification": "SequenceClassification",
    "token_classification": "TokenClassification",
}


def _offsets_tokenizer(run: Run, function: str) -> Any:
    """The `tokenizers.Tokenizer` of a HF checkpoint run (it gives character offsets); else one line."""
    if not isinstance(run.tokenizer, CheckpointTokenizer):
        raise InferenceError(
            f"{function}() maps tokens back to characters with a Hugging Face tokenizer.json; {run.workdir} is a "
            "training run. Export it (hf.save) with a tokenizer, or pass a Hugging Face checkpoint."
        )
    return run.tokenizer.tokenizer


def _check_text(text: Any, what: str) -> str:
    return check_texts([text], what)[0]


def _padded(run: Run, rows: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """tokens, token_type_ids, valid [B, W] with W the longest row rounded up to 8 (a few compiled shapes)."""
    limit = max_tokens(run.config)  # RoBERTa: less its padding offset
    for index, row in enumerate(rows):
        if len(row) > limit:
            name = "the input" if len(rows) == 1 else f"input {index}"
            raise InputTooLongError(
                f"{name} is {len(row)} tokens long but the model takes at most {limit}; shorten it."
            )
    width = min(limit, 8 * math.ceil(max(len(r) for r in rows) / 8))
    tokens = np.full((len(rows), width), run.tokenizer.pad_id, np.int32)
    type_ids = np.zeros((len(rows), width), np.int32)
    valid = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
        valid[i, : len(row)] = True
        if types is not None and run.config.num_token_types > 0:
            type_ids[i, : len(row)] = types[i]
    return {"tokens": tokens, "token_type_ids": type_ids, "valid": valid}


@functools.lru_cache(maxsize=8)
def _encoder_apply(config: ModelConfig) -> Any:
    model = build(config)

    @jax.jit
    def apply(params: Any, tokens: jax.Array, token_type_ids: jax.Array, valid: jax.Array) -> Any:
        return model.apply({"params": params}, tokens, token_type_ids, valid=valid)

    return apply


def encoder_outputs(run: Run, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The encoder-only model's outputs (float32 NumPy) on `inputs` {tokens, token_type_ids, valid} [B, W]."""
    out = _encoder_apply(run.config)(run.params, inputs["tokens"], inputs["token_type_ids"], inputs["valid"])
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def qa_windows(
    run: Run, question: str, context: str, max_seq_len: int | None = None, doc_stride: int = 128
) -> tuple[list[Any], dict[str, Any]]:
    """(tokenizers.Encoding of each window of the (question, context) pair, model inputs [N, W]).

    A pair longer than `max_seq_len` (default: min(384, the model's max_len), as transformers'
    pipeline) is cut into windows of the context that overlap by `doc_stride` tokens (at most
    half a window), each with the whole question: transformers' "only_second" truncation.
    """
    tokenizer = _offsets_tokenizer(run, "answer")
    question, context = _check_text(question, "question"), _check_text(context, "context")
    limit = max_tokens(run.config)
    max_seq_len = min(384, limit) if max_seq_len is None else check_int("max_seq_len", max_seq_len, 4, limit)
    doc_stride = min(check_int("doc_stride", doc_stride, 0, 1 << 20), max_seq_len // 2)
    encoding = tokenizer.encode(question, context, add_special_tokens=True)
    if len(encoding.ids) <= max_seq_len:
        windows = [encoding]
    else:
        cutter = Tokenizer.from_str(tokenizer.to_str())  # a copy: the run's tokenizer keeps its settings
        cutter.no_padding()
        cutter.enable_truncation(max_seq_len, stride=doc_stride, strategy="only_second")
        try:
            first = cutter.encode(question, context, add_special_tokens=True)
        except Exception as err:  # tokenizers raises a plain Exception (e.g. the question leaves no room)
            raise InputTooLongError(
                f"cannot cut the context into windows of {max_seq_len} tokens with doc_stride {doc_stride} "
                f"({' '.join(str(err).split())}); shorten the question or lower doc_stride."
            ) from None
        windows = [first, *first.overflowing]
    return windows, _padded(run, [w.ids for w in windows], [w.type_ids for w in windows])


def answer(
    model: Run | str | Path,
    question: str,
    context: str,
    max_answer_length: int = 30,
    top_k: int = 1,
    *,
    max_seq_len: int | None = None,
    doc_stride: int = 128,
) -> list[Answer]:
    """The `top_k` best answer spans of `context` for `question` (best first) with an extractive QA model.

    The rule of transformers' question-answering pipeline (`jaxformer.decoding.spans`): context tokens
    only, start <= end, at most `max_answer_length` tokens, ranked by start + end logit. A long context
    is read in overlapping windows (`qa_windows`); spans of all windows are ranked together by score
    (as run_qa's post-processing; ties: the earlier window), the same characters counted once.
    """
    run = as_run(model)
    _require_head(run, "qa", "answer")
    max_answer_length = check_int("max_answer_length", max_answer_length, 1, run.config.max_len)
    top_k = check_int("top_k", top_k, 1, 1000)
    windows, inputs = qa_windows(run, question, context, max_seq_len, doc_stride)
    out = encoder_outputs(run, inputs)
    found: list[tuple[float, int, spans.Span]] = []
    for index, encoding in enumerate(windows):
        length = len(encoding.ids)
        allowed = spans.context_mask(encoding.sequence_ids)
        starts, ends = out["start_logits"][index, :length], out["end_logits"][index, :length]
        found += [(-s.score, index, s) for s in spans.best_spans(starts, ends, allowed, max_answer_length, top_k)]
    if not any(spans.context_mask(w.sequence_ids).any() for w in windows):
        raise EmptyInputError("the context gives no tokens after tokenization; pass some text.")
    answers: dict[tuple[int, int], Answer] = {}
    for _, index, span in sorted(found, key=lambda item: (item[0], item[1])):  # stable: a window's own order
        begin, end = spans.char_range(windows[index].offsets, span)
        if (begin, end) not in answers and len(answers) < top_k:
            answers[begin, end] = Answer(
                context[begin:end], begin, end, span.score, span.probability, span.start, span.end, index
            )
    return list(answers.values())


def id2label(run: Run) -> list[str]:
    """Class names: config.json's id2label of a HF checkpoint ("LABEL_i" where it names none)."""
    names = {}
    if run.experiment is None and (run.workdir / "config.json").is_file():
        raw = files.read_config(run.workdir).get("id2label") or {}
        names = {int(k): str(v) for k, v in raw.items() if str(k).lstrip("-").isdigit()}
    return [names.get(i, f"LABEL_{i}") for i in range(run.config.num_classes)]


def classify_labels(model: Run | str | Path, texts: Sequence[str]) -> list[dict[str, Any]]:
    """{"label": name, "id": class id, "probabilities": {name: p}} per text (id2label from the checkpoint)."""
    run = as_run(model)
    _require_head(run, "classification", "classify")
    names = id2label(run)
    return [
        {"label": names[best], "id": best, "probabilities": dict(zip(names, probs, strict=True))}
        for best, probs in classify(run, texts)
    ]


def tag(model: Run | str | Path, text: str) -> list[dict[str, Any]]:
    """Per-word labels of `text` with a token-classification model: the label of each word's first token
    (transformers' aggregation "first"). [{"word", "start", "end", "label", "probability"}] in order."""
    run = as_run(model)
    _require_head(run, "token_classification", "tag")
    tokenizer = _offsets_tokenizer(run, "tag")
    text = _check_text(text, "text")
    encoding = tokenizer.encode(text, add_special_tokens=True)
    inputs = _padded(run, [encoding.ids], [encoding.type_ids])
    logits = encoder_outputs(run, inputs)["logits"][0, : len(encoding.ids)]  # [T, C]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    names = id2label(run)
    words: dict[int, dict[str, Any]] = {}
    for index, word in enumerate(encoding.word_ids):
        if word is None:
            continue
        begin, end = encoding.offsets[index]
        if word not in words:
            best = int(probs[index].argmax())
            words[word] = {"start": begin, "label": names[best], "id": best, "probability": float(probs[index, best])}
        words[word]["end"] = end
    return [{"word": text[w["start"] : w["end"]], **w} for w in words.values()]


__all__ = ["Answer", "answer", "classify_labels", "encoder_outputs", "id2label", "qa_windows", "tag"]
