"""Use a trained run: load it once, then generate, translate, classify or evaluate.

    run = load_run("/tmp/jaxformer-default")                    # config.json + newest intact checkpoint
    translate(run, ["12345"])                                   # encoder-decoder  -> ["54321"]
    generate(run, ["ROMEO:"], max_new_tokens=64, method="sample", top_p=0.9, seed=1)   # decoder-only
    classify(run, ["3141592"])                                  # encoder-only     -> [(label, probs)]
    evaluate_bleu(run, "test", SearchConfig(method="beam"))     # BLEU / chrF over a whole split

Decoding settings are one `SearchConfig` (or its field names as keywords), checked once.

    run = load_model("Qwen/Qwen3-0.6B")                         # any supported HF checkpoint dir or repo id
    generate(run, ["Hello"]); generate(run, ["Name a colour."], chat=True)   # chat: its chat template

`load_run` rebuilds the data pipeline from the run's saved `config.json` with the run's
workdir and the tokenizer training stored in `<workdir>/tokenizer/` (`data.tokenizer_store`;
never rebuilt from the data, which may have changed since), so text is encoded exactly as in
training (`Pipeline.encode_input`). `load_model` gives the same kind of `Run` for a Hugging Face
checkpoint, with the checkpoint's own tokenizer (tokenizer.json, special ids, chat template).
Every user mistake raises an `InferenceError` (a `jaxformer.errors.InputError`, also a ValueError)
with a one-line message.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tokenizers import Tokenizer

from jaxformer import experiment as experiments
from jaxformer import hf
from jaxformer.config import GENERATE_NEW_TOKENS, ConfigError, ModelConfig, SearchConfig
from jaxformer.data import build_pipeline, tokenizer_store
from jaxformer.data.errors import DataFileNotFoundError
from jaxformer.data.pipeline import Pipeline
from jaxformer.data.tokenizer_factory import sentencepiece_file
from jaxformer.decoding import spans
from jaxformer.decoding.evaluate import lm_batch, seq2seq_batch, split_metrics, text_scores
from jaxformer.decoding.texts import generate_texts, translate_batched
from jaxformer.errors import InputError
from jaxformer.experiment import Experiment
from jaxformer.hf import convert, files, hub, run_export
from jaxformer.hf.tokenizer import CheckpointTokenizer, load_checkpoint_tokenizer
from jaxformer.models import build, param_count
from jaxformer.train.checkpoint import load_params
from jaxformer.train.step import make_eval_step

MAX_TEXT_CHARS = 20_000  # longer inputs are rejected before tokenizing


class InferenceError(InputError):
    """A request the run cannot serve (bad input, wrong model family, missing files); one-line message."""


class NoCheckpointError(InferenceError):
    """The workdir has no usable run (no config.json or no checkpoint)."""


class WrongFamilyError(InferenceError):
    """The function needs another model family than the run's."""


class EmptyInputError(InferenceError):
    """A text is empty (or only whitespace)."""


class InputTooLongError(InferenceError):
    """A text has more tokens than the model was trained to take."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run ready for inference: validated experiment, model config, params (one device), pipeline."""

    workdir: Path  # the training workdir, or the HF checkpoint directory (load_model)
    experiment: Experiment | None  # None for a HF checkpoint
    config: ModelConfig
    params: Any
    pipeline: Pipeline | CheckpointPipeline
    step: int | None  # checkpoint step (None for an export directory or a HF checkpoint)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def tokenizer(self) -> Any:
        return self.pipeline.tokenizer

    def summary(self) -> str:
        """One line: family, preset, size, tokenizer, step, workdir."""
        step = "export" if self.step is None else f"step {self.step}"
        if self.experiment is None:
            return (
                f"{self.family} model ({param_count(self.config) / 1e6:.2f}M params, max_len {self.config.max_len}), "
                f"Hugging Face checkpoint {self.workdir} with its tokenizer ({self.tokenizer.vocab_size} ids)"
            )
        return (
            f"{self.family} model (preset {self.experiment.preset}, {param_count(self.config) / 1e6:.2f}M params, "
            f"max_len {self.config.max_len}), {self.tokenizer.kind} tokenizer ({self.tokenizer.vocab_size} ids), "
            f"checkpoint {step} of {self.workdir}"
        )


# Loading --------------------------------------------------------------------------------------


def load_run(workdir: str | Path, step: int | None = None, checkpoint: str | Path | None = None) -> Run:
    """Load the run in `workdir`: its config.json, tokenizer and the newest intact checkpoint (or `step`).

    `checkpoint`: take the params from another place instead (an export directory, a step directory).
    """
    workdir = Path(workdir).expanduser()
    if not workdir.is_dir():
        raise NoCheckpointError(f"workdir {workdir} does not exist; pass the --workdir of a training run.")
    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise NoCheckpointError(
            f"{workdir} has no config.json; pass a training workdir (it holds config.json, tokenizer/ and checkpoints/)."
        )
    if checkpoint is None and not _has_checkpoint(workdir):
        raise NoCheckpointError(
            f"no checkpoint in {workdir}; train first (jaxformer train --workdir {workdir} ...) or wait for the first save."
        )
    try:
        exp = experiments.validate(ml_collections.ConfigDict(json.loads(config_file.read_text(encoding="utf-8"))))
    except json.JSONDecodeError as err:
        raise NoCheckpointError(f"{config_file} is not valid JSON ({err.msg} at line {err.lineno}).") from None
    if checkpoint is None and exp.lora is not None:  # adapters-only checkpoints: the base re-imported, merged
        weights = run_export.run_weights(workdir, step)
        params, model_config, saved_step = weights.params, weights.config, weights.step
    else:
        params, model_config, saved_step = load_params(workdir if checkpoint is None else Path(checkpoint), step)
    data = exp.data
    stored_tokenizer = tokenizer_store.load(workdir)  # the tokenizer training used (None: a pre-issue-20 run)
    if (
        stored_tokenizer is None
        and data.tokenizer == "sentencepiece"
        and not sentencepiece_file(data, str(workdir)).is_file()
    ):
        raise InferenceError(
            f"the run's SentencePiece model {sentencepiece_file(data, str(workdir))} is missing; "
            "inference needs the tokenizer training used."
        )
    try:
        pipeline = build_pipeline(
            data,
            family=model_config.family,
            batch_size=exp.train.batch_size,
            seed=exp.seed,
            workdir=str(workdir),
            tokenizer=stored_tokenizer,
        )
    except DataFileNotFoundError as err:
        raise InferenceError(
            f"{err} (Data paths in {config_file} are relative to the directory training ran in; run from there.)"
        ) from None
    if pipeline.vocab_size != model_config.vocab_size:
        raise InferenceError(
            f"the rebuilt tokenizer has {pipeline.vocab_size} ids but the checkpoint's model has "
            f"vocab_size={model_config.vocab_size}; the training data or tokenizer changed since training."
        )
    return Run(workdir, exp, model_config, params, pipeline, saved_step)


def _has_checkpoint(workdir: Path) -> bool:
    checkpoints = workdir / "checkpoints"
    return checkpoints.is_dir() and any(p.name.isdigit() and p.is_dir() for p in checkpoints.iterdir())


@dataclasses.dataclass(frozen=True)
class CheckpointPipeline:
    """What inference needs of a pipeline, for a HF checkpoint: its tokenizer and the model's widths.

    A checkpoint carries no data: `data` holds the (input, reference) pairs of a file the user
    gives (`with_eval_data`), served under every split name; without it the split methods raise.
    """

    tokenizer: CheckpointTokenizer
    task: str  # "lm" | "seq2seq" | "classification" | "mlm"
    widths: tuple[int, ...]  # (max_len,), or (max_len, default output length) for an encoder-decoder
    data: tuple[tuple[str, str], ...] = ()  # (text, "") for a language model, (source, reference) for seq2seq
    batch_rows: int = 8
    infinite = False

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {split: {"records": len(self.data)} for split in SPLITS} if self.data else {}

    def encode_input(self, text: str) -> list[int]:
        """Model input ids: the tokenizer's own special tokens (tokenizer.json's post-processor) around `text`."""
        return self.tokenizer.encode_input(text)

    def _check_data(self) -> None:
        if not self.data:
            raise InferenceError(
                f"the Hugging Face checkpoint {self.tokenizer.directory} holds no data; pass a file to evaluate on "
                "(jaxformer evaluate --model M --input FILE: one text per line, or source<TAB>reference lines)."
            )

    def examples(self, split: str, n: int) -> list[tuple[str, str]]:
        self._check_data()
        return list(self.data[:n])

    def split_examples(self, split: str) -> list[tuple[str, str]]:
        self._check_data()
        return list(self.data)

    def eval_batches(self, split: str = "test") -> Iterator[dict[str, np.ndarray]]:
        """Batches of `batch_rows` examples as train.tasks.forward takes them (segment ids mark the real tokens)."""
        self._check_data()
        limit = self.widths[0]  # the model's max_len
        for first in range(0, len(self.data), self.batch_rows):
            chunk = self.data[first : first + self.batch_rows]
            if self.task == "lm":
                rows = [self.encode_input(text)[: limit + 1] for text, _ in chunk]
                yield lm_batch(rows, self.batch_rows, limit)
            else:
                sources = [self.encode_input(text)[:limit] for text, _ in chunk]
                targets = [self.encode_input(ref)[:limit] for _, ref in chunk]
                yield seq2seq_batch(sources, targets, self.tokenizer.bos_id, self.batch_rows, limit)


SPLITS = ("train", "validation", "test")


def read_eval_file(path: str | Path, task: str) -> list[tuple[str, str]]:
    """(input, reference) pairs of a text file: one text per line (lm), or source<TAB>reference (seq2seq)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InferenceError(f"evaluation file {file} does not exist.")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise EmptyInputError(f"evaluation file {file} has no text; put one example per line.")
    if task == "lm":
        return [(line, "") for line in lines]
    pairs = []
    for number, line in enumerate(lines, 1):
        parts = line.split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise InferenceError(f"line {number} of {file} is not 'source<TAB>reference'; fix or remove it.")
        pairs.append((parts[0], parts[1]))
    return pairs


def with_eval_data(run: Run, path: str | Path, batch_rows: int = 8) -> Run:
    """`run` (a HF checkpoint) with the examples of file `path` to evaluate on (every split name serves them)."""
    pipeline = run.pipeline
    if not isinstance(pipeline, CheckpointPipeline):
        raise InferenceError(f"{run.workdir} is a training run; it evaluates on its own data splits, drop --input.")
    if pipeline.task not in ("lm", "seq2seq"):
        raise WrongFamilyError(f"evaluating a file needs a decoder-only or encoder-decoder model, not {run.family}.")
    data = tuple(read_eval_file(path, pipeline.task))
    return dataclasses.replace(run, pipeline=dataclasses.replace(pipeline, data=data, batch_rows=batch_rows))


CHECKPOINT_TASKS = {"decoder_only": "lm", "encoder_decoder": "seq2seq"}


def load_model(path_or_repo: str | Path, revision: str | None = None) -> Run:
    """A Hugging Face checkpoint (model dir, Hub cache dir or "org/name" repo id at `revision`) as a Run.

    The model comes from `jaxformer.hf.load`; text goes through the checkpoint's tokenizer.json
    (special ids from generation_config.json / config.json / tokenizer_config.json, its chat template).
    Unsupported model_type, missing tokenizer.json, a repo id offline and not cached: one-line errors.
    """
    directory = hub.locate(path_or_repo, revision)
    convert.architecture_of(files.read_config(directory), str(directory / "config.json"))  # before reading weights
    tokenizer = load_checkpoint_tokenizer(directory)
    _, params, config = hf.load(directory)
    if tokenizer.vocab_size > config.vocab_size:
        raise InferenceError(
            f"the tokenizer of {directory} has {tokenizer.vocab_size} ids but the model only "
            f"vocab_size={config.vocab_size}; the tokenizer.json belongs to another model."
        )
    task = CHECKPOINT_TASKS.get(config.family) or (
        "classification" if config.encoder_head == "classification" else "mlm"
    )
    widths: tuple[int, ...] = (config.max_len,)
    if config.family == "encoder_decoder":
        widths = (config.max_len, _generation_length(directory, config.max_len))
    return Run(directory, None, config, params, CheckpointPipeline(tokenizer, task, widths), None)


def _generation_length(directory: Path, limit: int) -> int:
    """Default output length of an encoder-decoder: generation_config.json's max_new_tokens, else max_length - 1
    (the decoder start token counts in transformers' max_length), else the model's max_len."""
    file = directory / "generation_config.json"
    settings = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    if isinstance(settings.get("max_new_tokens"), int):
        return max(1, min(limit, settings["max_new_tokens"]))
    if isinstance(settings.get("max_length"), int):
        return max(1, min(limit, settings["max_length"] - 1))
    return limit


def prompt_ids(run: Run, prompts: Sequence[str], chat: bool = False) -> list[list[int]]:
    """The model input ids of each prompt, as `generate(run, prompts, chat=chat)` feeds them."""
    prompts = _check_texts(prompts, "prompt")
    if not chat:
        return _encode(run, prompts, "prompt")
    tokenizer = run.tokenizer
    if not isinstance(tokenizer, CheckpointTokenizer):
        raise InferenceError(
            f"chat needs a Hugging Face checkpoint with a chat template; {run.workdir} is a training run."
        )
    rows = [tokenizer.chat_ids([{"role": "user", "content": text}]) for text in prompts]
    for index, row in enumerate(rows):
        if len(row) >= run.config.max_len:
            name = "the prompt" if len(rows) == 1 else f"prompt {index}"
            raise InputTooLongError(
                f"{name} is {len(row)} tokens with its chat template but the model takes at most {run.config.max_len}."
            )
    return rows


# Checks -------------------------------------------------------------------------------------


def _require_family(run: Run, family: str, function: str) -> None:
    if run.family != family:
        use = {"decoder_only": "generate", "encoder_decoder": "translate", "encoder_only": "classify"}[run.family]
        raise WrongFamilyError(
            f"{function}() needs {_a(family)} model but {run.workdir} holds {_a(run.family)} one; use {use}()."
        )


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise InferenceError(f"{what}s must be a list of strings, not one string; wrap it in a list.")
    texts = list(texts)
    if not texts:
        raise EmptyInputError(f"no {what} given; pass at least one.")
    for index, text in enumerate(texts):
        name = f"the {what}" if len(texts) == 1 else f"{what} {index}"
        if not isinstance(text, str):
            raise InferenceError(f"{name} must be a string, got {type(text).__name__}.")
        if not text.strip():
            raise EmptyInputError(f"{name} is empty; type some text.")
        if len(text) > MAX_TEXT_CHARS:
            raise InputTooLongError(f"{name} has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted.")
    return texts


def _encode(run: Run, texts: list[str], what: str) -> list[list[int]]:
    """Model inputs as in training; an input that training would have cut is an error, not silently cut."""
    pipeline, rows = run.pipeline, []
    room = min(pipeline.widths[0], run.config.max_len)
    extra = 1 if pipeline.task == "lm" else 2 if pipeline.task == "classification" else 1  # bos/eos added
    for index, text in enumerate(texts):
        count = len(run.tokenizer.encode(text)) + extra
        if count > room:
            name = f"the {what}" if len(texts) == 1 else f"{what} {index}"
            raise InputTooLongError(f"{name} is {count} tokens long but the model takes at most {room}; shorten it.")
        rows.append(pipeline.encode_input(text))
    return rows


def _check_int(name: str, value: Any, low: int, high: int, hint: str = "") -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InferenceError(f"{name}={value!r} must be an integer in [{low}, {high}]{hint}.")
    return int(value)


def _check_split(split: str) -> None:
    if split not in ("train", "validation", "test"):
        raise InferenceError(f"split={split!r} is unknown; choose 'train', 'validation' or 'test'.")


def _search(search: SearchConfig | None, settings: dict[str, Any]) -> SearchConfig:
    """The request's search settings, checked once by `SearchConfig` (a bad one: an InferenceError)."""
    try:
        return SearchConfig.of(search, **settings)
    except ConfigError as err:
        raise InferenceError(str(err)) from None


def _checked_search(run: Run, search: SearchConfig, max_new_tokens: int) -> SearchConfig:
    """`search` with the checked `max_new_tokens` and the model's limits (2 * beam_size, top_k) applied."""
    search = dataclasses.replace(search, max_new_tokens=max_new_tokens)
    try:
        search.check_model(run.config)
    except ConfigError as err:
        raise InferenceError(str(err)) from None
    return search


# Generation, translation, classification ----------------------------------------------------


def generate(
    run: Run, prompts: Sequence[str], search: SearchConfig | None = None, *, chat: bool = False, **settings: Any
) -> list[str]:
    """Continue each prompt with a decoder-only model; returns the new text only (stops at EOS).

    search: a `SearchConfig` (default greedy); settings: changes to it by field name (max_new_tokens
    (default `GENERATE_NEW_TOKENS`), method, temperature, top_k, top_p, seed, beam_size, alpha).
    chat: each prompt is a user message, rendered by the checkpoint's chat template (load_model runs).
    Prompts + new tokens must fit in max_len.
    """
    _require_family(run, "decoder_only", "generate")
    search = _search(search, settings)
    rows = prompt_ids(run, prompts, chat)
    longest = max(len(r) for r in rows)
    room = run.config.max_len - longest
    if room < 1:
        raise InputTooLongError(f"the prompt fills the model's max_len={run.config.max_len}; shorten it.")
    max_new_tokens = _check_int(
        "max_new_tokens",
        search.new_tokens(GENERATE_NEW_TOKENS),
        1,
        room,
        f" (max_len {run.config.max_len} - prompt length {longest})",
    )
    search = _checked_search(run, search, max_new_tokens)
    return generate_texts(run.config, run.params, run.tokenizer, rows, search)


def translate(
    run: Run, texts: Sequence[str], search: SearchConfig | None = None, *, batch_size: int = 64, **settings: Any
) -> list[str]:
    """Translate each text with an encoder-decoder model, `batch_size` at a time (sorted by length).

    search / settings as in `generate`; max_new_tokens default: the training target length
    (`data.max_target_length`, capped at max_len).
    """
    _require_family(run, "encoder_decoder", "translate")
    search = _search(search, settings)
    texts = _check_texts(texts, "text")
    _encode(run, texts, "text")  # length checks before any decoding
    limit = run.config.max_len
    max_new_tokens = search.new_tokens(min(run.pipeline.widths[1], limit))
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1, limit, f" (the model's max_len is {limit})")
    search = _checked_search(run, search, max_new_tokens)
    batch_size = _check_int("batch_size", batch_size, 1, 4096)
    return translate_batched(run.config, run.params, run.pipeline, texts, search, batch_size)


@functools.lru_cache(maxsize=8)
def _classifier(config: ModelConfig) -> Any:
    model = build(config)

    @jax.jit
    def probabilities(params: Any, tokens: jax.Array) -> jax.Array:
        out: Any = model.apply({"params": params}, tokens, valid=tokens != config.pad_token_id)
        return jax.nn.softmax(out["logits"].astype(np.float32), axis=-1)  # [B, C]

    return probabilities


def classify(run: Run, texts: Sequence[str]) -> list[tuple[int, list[float]]]:
    """(predicted class id, class probabilities [C]) for each text, with an encoder-only classifier."""
    _require_family(run, "encoder_only", "classify")
    if run.config.encoder_head != "classification":
        raise WrongFamilyError(
            f"classify() needs a classification head; {run.workdir} has encoder_head={run.config.encoder_head!r}."
        )
    rows = _encode(run, _check_texts(texts, "text"), "text")
    width = min(run.pipeline.widths[0], run.config.max_len)
    batch = 8 * math.ceil(len(rows) / 8)  # a few batch shapes, a few compilations
    tokens = np.full((batch, width), run.tokenizer.pad_id, np.int32)  # [B, L]; padding rows get one token
    tokens[len(rows) :, 0] = run.tokenizer.bos_id
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    probs = np.asarray(_classifier(run.config)(run.params, tokens))[: len(rows)]  # [B, C]
    return [(int(p.argmax()), [float(x) for x in p]) for p in probs]


# Evaluation ---------------------------------------------------------------------------------


TRANSLATION_EVAL_METHODS = ("greedy", "beam")


def evaluate_bleu(
    run: Run,
    split: str = "test",
    search: SearchConfig | None = None,
    *,
    batch_size: int = 64,
    max_examples: int = 0,
    **settings: Any,
) -> dict[str, Any]:
    """Translate every example of `split` (or the first `max_examples`); sacrebleu BLEU and chrF, exact match.

    search / settings as in `translate` (method greedy or beam); max_new_tokens default: the training target length.
    """
    _require_family(run, "encoder_decoder", "evaluate_bleu")
    search = _search(search, settings)
    if search.method not in TRANSLATION_EVAL_METHODS:
        raise InferenceError(
            f"method={search.method!r} is not allowed for evaluation; choose one of {list(TRANSLATION_EVAL_METHODS)}."
        )
    pairs = split_pairs(run, split, max_examples)
    start = time.perf_counter()
    hypotheses = translate(run, [s for s, _ in pairs], search, batch_size=batch_size)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"split": split, "examples": len(pairs), "method": search.method}
    result.update(text_scores(hypotheses, [r for _, r in pairs]))
    result["decode_seconds"] = seconds
    if search.method == "beam":
        result.update(beam_size=search.beam_size, alpha=search.alpha)
    return result


def split_pairs(run: Run, split: str, max_examples: int = 0) -> list[tuple[str, str]]:
    """(input text, reference text) of every example of `split` (the first `max_examples` when > 0)."""
    _check_split(split)
    _check_int("max_examples", max_examples, 0, 10**9)
    pipeline = run.pipeline
    pipeline.split_examples(split)  # raises a one-line DataError when the config has no such split
    count = pipeline.stats[split]["records"]
    return pipeline.examples(split, min(count, max_examples) if max_examples else count)


def evaluate(
    run: Run, split: str = "test", search: SearchConfig | None = None, *, batch_size: int = 64, **settings: Any
) -> dict[str, Any]:
    """Loss, perplexity and accuracy over `split` for any family; plus BLEU/chrF/exact match for translation
    (decoded with search / settings as in `translate`)."""
    search = _search(search, settings)

    _check_split(split)
    if run.pipeline.infinite and split == "train":
        raise InferenceError("the synthetic training split is endless; evaluate 'validation' or 'test'.")
    examples = len(run.pipeline.split_examples(split))  # rows of max_length tokens for a language model
    eval_step = jax.jit(make_eval_step(build(run.config), run.config))
    sums = split_metrics(eval_step, run.params, run.pipeline.eval_batches(split))
    result: dict[str, Any] = {"split": split, "step": run.step, "examples": examples}
    result.update({key.removeprefix("eval_"): value for key, value in sums.items()})
    if run.family == "encoder_decoder":
        result.update(evaluate_bleu(run, split, search, batch_size=batch_size))
    return result


# Question answering, text classification with labels, token tagging (issue 22) ----------------


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


def as_run(model: Run | str | Path) -> Run:
    """A loaded Run as is; a Hugging Face checkpoint directory or repo id (config.json with a model_type), or a
    training workdir (config.json of an experiment), loaded."""
    if isinstance(model, Run):
        return model
    directory = Path(model).expanduser()
    config_file = directory / "config.json"
    if directory.is_dir() and config_file.is_file() and "model_type" not in files.read_config(directory):
        return load_run(directory)
    return load_model(model)


def _require_head(run: Run, head: str, function: str) -> None:
    _require_family(run, "encoder_only", function)
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
    return _check_texts([text], what)[0]


def _padded(run: Run, rows: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """tokens, token_type_ids, valid [B, W] with W the longest row rounded up to 8 (a few compiled shapes)."""
    limit = run.config.max_len
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
    limit = run.config.max_len
    max_seq_len = min(384, limit) if max_seq_len is None else _check_int("max_seq_len", max_seq_len, 4, limit)
    doc_stride = min(_check_int("doc_stride", doc_stride, 0, 1 << 20), max_seq_len // 2)
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
    max_answer_length = _check_int("max_answer_length", max_answer_length, 1, run.config.max_len)
    top_k = _check_int("top_k", top_k, 1, 1000)
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
__all__ = [
    "Answer",
    "CheckpointPipeline",
    "EmptyInputError",
    "InferenceError",
    "InputTooLongError",
    "NoCheckpointError",
    "Run",
    "WrongFamilyError",
    "answer",
    "as_run",
    "classify",
    "classify_labels",
    "evaluate",
    "evaluate_bleu",
    "generate",
    "id2label",
    "load_model",
    "load_run",
    "prompt_ids",
    "read_eval_file",
    "split_pairs",
    "tag",
    "translate",
    "with_eval_data",
]
