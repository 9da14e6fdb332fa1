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

from jaxformer import experiment as experiments
from jaxformer import hf
from jaxformer.config import GENERATE_NEW_TOKENS, ConfigError, ModelConfig, SearchConfig
from jaxformer.data import build_pipeline, tokenizer_store
from jaxformer.data.errors import DataFileNotFoundError
from jaxformer.data.pipeline import Pipeline
from jaxformer.data.tokenizer_factory import sentencepiece_file
from jaxformer.decoding.evaluate import lm_batch, seq2seq_batch, split_metrics, text_scores
from jaxformer.decoding.quantize import quantize
from jaxformer.decoding.texts import generate_texts, translate_batched
from jaxformer.errors import InputError
from jaxformer.experiment import Experiment
from jaxformer.hf import convert, files, hub, run_export
from jaxformer.hf.generation_config import checkpoint_search
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
    prompts = check_texts(prompts, "prompt")
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


def require_family(run: Run, family: str, function: str) -> None:
    if run.family != family:
        use = {"decoder_only": "generate", "encoder_decoder": "translate", "encoder_only": "classify"}[run.family]
        raise WrongFamilyError(
            f"{function}() needs {_a(family)} model but {run.workdir} holds {_a(run.family)} one; use {use}()."
        )


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def check_texts(texts: Sequence[str], what: str) -> list[str]:
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


def check_int(name: str, value: Any, low: int, high: int, hint: str = "") -> int:
    """`value` as an int in [low, high] (an integral float is accepted), or an InferenceError naming it."""
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
    require_family(run, "decoder_only", "generate")
    search = _search(search, settings)
    rows = prompt_ids(run, prompts, chat)
    longest = max(len(r) for r in rows)
    room = run.config.max_len - longest
    if room < 1:
        raise InputTooLongError(f"the prompt fills the model's max_len={run.config.max_len}; shorten it.")
    max_new_tokens = check_int(
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
    (`data.max_target_length`, capped at max_len). A HF checkpoint (`load_model`) without `search`: its
    generation_config.json's rules (`checkpoint_search`) are the base that `settings` change.
    """
    require_family(run, "encoder_decoder", "translate")
    if search is None and run.experiment is None:
        search = _search(None, checkpoint_search(run.workdir))
    search = _search(search, settings)
    texts = check_texts(texts, "text")
    _encode(run, texts, "text")  # length checks before any decoding
    limit = run.config.max_len
    max_new_tokens = search.new_tokens(min(run.pipeline.widths[1], limit))
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1, limit, f" (the model's max_len is {limit})")
    search = _checked_search(run, search, max_new_tokens)
    batch_size = check_int("batch_size", batch_size, 1, 4096)
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
    require_family(run, "encoder_only", "classify")
    if run.config.encoder_head != "classification":
        raise WrongFamilyError(
            f"classify() needs a classification head; {run.workdir} has encoder_head={run.config.encoder_head!r}."
        )
    rows = _encode(run, check_texts(texts, "text"), "text")
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
    require_family(run, "encoder_decoder", "evaluate_bleu")
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
    check_int("max_examples", max_examples, 0, 10**9)
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


# Loading either kind of model ------------------------------------------------------------


def quantized(run: Run, method: str | None = "int8") -> Run:
    """The run with its decoder's dense kernels int8 (per-output-channel scales; "none"/None: unchanged)."""
    return dataclasses.replace(run, params=quantize(run.config, run.params, method))


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


__all__ = [
    "CheckpointPipeline",
    "EmptyInputError",
    "InferenceError",
    "InputTooLongError",
    "NoCheckpointError",
    "Run",
    "WrongFamilyError",
    "as_run",
    "classify",
    "evaluate",
    "evaluate_bleu",
    "generate",
    "load_model",
    "load_run",
    "prompt_ids",
    "quantized",
    "read_eval_file",
    "split_pairs",
    "translate",
    "with_eval_data",
]
