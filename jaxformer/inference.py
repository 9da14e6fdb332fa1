"""Use a trained run: load it once, then generate, translate, classify or evaluate.

    run = load_run("/tmp/jaxformer-default")                    # config.json + newest intact checkpoint
    translate(run, ["12345"])                                   # encoder-decoder  -> ["54321"]
    generate(run, ["ROMEO:"], max_new_tokens=64, method="sample", top_p=0.9, seed=1)   # decoder-only
    classify(run, ["3141592"])                                  # encoder-only     -> [(label, probs)]
    evaluate_bleu(run, "test", SearchConfig(method="beam"))     # BLEU / chrF over a whole split

Decoding settings are one `SearchConfig` (or its field names as keywords), checked once.

`load_run` rebuilds the data pipeline from the run's saved `config.json` with the run's
workdir and the tokenizer training stored in `<workdir>/tokenizer/` (`data.tokenizer_store`;
never rebuilt from the data, which may have changed since), so text is encoded exactly as in
training (`Pipeline.encode_input`).
Every user mistake raises an `InferenceError` (a ValueError) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxformer.config import GENERATE_NEW_TOKENS, ConfigError, ModelConfig, SearchConfig
from jaxformer.data.pipeline import Pipeline
from jaxformer.decoding.evaluate import split_metrics, text_scores
from jaxformer.decoding.texts import generate_texts, translate_batched
from jaxformer.experiment import Experiment

MAX_TEXT_CHARS = 20_000  # longer inputs are rejected before tokenizing


class InferenceError(ValueError):
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

    workdir: Path
    experiment: Experiment
    config: ModelConfig
    params: Any
    pipeline: Pipeline
    step: int | None  # checkpoint step (None for an export directory)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def tokenizer(self) -> Any:
        return self.pipeline.tokenizer

    def summary(self) -> str:
        """One line: family, preset, size, tokenizer, step, workdir."""
        from jaxformer.models import param_count

        step = "export" if self.step is None else f"step {self.step}"
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
    import ml_collections

    from jaxformer import experiment as experiments
    from jaxformer.data import build_pipeline, tokenizer_store
    from jaxformer.data.errors import DataFileNotFoundError
    from jaxformer.data.tokenizer_factory import sentencepiece_file
    from jaxformer.train.checkpoint import load_params

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


def generate(run: Run, prompts: Sequence[str], search: SearchConfig | None = None, **settings: Any) -> list[str]:
    """Continue each prompt with a decoder-only model; returns the new text only (stops at EOS).

    search: a `SearchConfig` (default greedy); settings: changes to it by field name (max_new_tokens
    (default `GENERATE_NEW_TOKENS`), method, temperature, top_k, top_p, seed, beam_size, alpha).
    Prompts + new tokens must fit in max_len.
    """
    _require_family(run, "decoder_only", "generate")
    search = _search(search, settings)
    rows = _encode(run, _check_texts(prompts, "prompt"), "prompt")
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
    from jaxformer.models import build

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
    from jaxformer.models import build
    from jaxformer.train.step import make_eval_step

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


__all__ = [
    "EmptyInputError",
    "InferenceError",
    "InputTooLongError",
    "NoCheckpointError",
    "Run",
    "WrongFamilyError",
    "classify",
    "evaluate",
    "evaluate_bleu",
    "generate",
    "load_run",
    "split_pairs",
    "translate",
]
