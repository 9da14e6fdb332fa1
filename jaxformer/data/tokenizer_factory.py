"""Build the configured tokenizer; SentencePiece models are trained once and cached in the work directory.

Cache: `data.tokenizer_path` when set (loaded if it exists, else trained and written there);
otherwise `<workdir>/tokenizer/spm-<model>-<vocab>-<fingerprint>.model`, where the fingerprint
covers the settings that decide the training text, so a changed dataset trains a new model.
Without a work directory the model goes to a temporary directory (not reused).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError
from jaxformer.data.sentencepiece_train import train_sentencepiece, wait_for_model
from jaxformer.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    DigitsTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
)

log = logging.getLogger("jaxformer.data")

# Settings that decide which text SentencePiece is trained on, and how.
_TEXT_FIELDS = (
    "source", "task", "synthetic_task", "synthetic_min_length", "synthetic_max_length", "num_train_examples",
    "max_train_examples", "train_path", "source_suffix", "target_suffix", "text_unit", "holdout_fraction",
    "tsv_header", "text_field", "source_field", "target_field", "tfds_name", "hf_path", "train_split",
    "vocab_size", "tokenizer_train_examples", "sentencepiece_model",
)  # fmt: skip


def fingerprint(config: DataConfig) -> str:
    """A short hash of the settings that decide the SentencePiece training text."""
    values = {name: getattr(config, name) for name in _TEXT_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def sentencepiece_file(config: DataConfig, workdir: str | None) -> Path:
    if config.tokenizer_path:
        return Path(config.tokenizer_path).expanduser()
    directory = Path(workdir) / "tokenizer" if workdir else Path(tempfile.mkdtemp(prefix="jaxformer-spm-"))
    return directory / f"spm-{config.sentencepiece_model}-{config.vocab_size}-{fingerprint(config)}.model"


def build_tokenizer(
    config: DataConfig,
    training_texts: Callable[[], Iterable[str]],
    workdir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Tokenizer:
    """The tokenizer of `config`. `training_texts()` yields the training text (char alphabet, SentencePiece)."""
    kind = config.tokenizer
    if kind == "digits":
        return DigitsTokenizer()
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer.from_texts(training_texts())
    if kind == "hf":
        return HFTokenizer(str(config.tokenizer_path))
    model_file = sentencepiece_file(config, workdir)
    if model_file.exists():
        log.info("reusing SentencePiece model %s", model_file)
    elif process_index == 0:
        train_sentencepiece(
            training_texts(), model_file, config.vocab_size, config.sentencepiece_model, config.tokenizer_train_examples
        )
    elif process_count > 1 and (config.tokenizer_path or workdir):
        wait_for_model(model_file)
    else:
        raise DataError(
            "SentencePiece needs a model shared by all processes: set data.tokenizer_path or a shared workdir."
        )
    return SentencePieceTokenizer(str(model_file))
