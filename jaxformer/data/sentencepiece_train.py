"""Training SentencePiece on the training text, cached on disk and reused when present.

Settings for an exact round trip, decode(encode(x)) == x: `normalization_rule_name="identity"`
(no NFKC), `remove_extra_whitespaces=False` (keep every space) and `byte_fallback=True`
(characters outside the learned pieces become UTF-8 byte pieces instead of <unk>).
Ids: pad 0, bos 1, eos 2, unk 3.

In multi-process runs process 0 trains and writes the model atomically; the others wait for
the file (the work directory must then be shared, or `data.tokenizer_path` must point at a
model prepared beforehand).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from jaxformer.data.errors import DataError

log = logging.getLogger("jaxformer.data")
WAIT_SECONDS = 1800


def train_sentencepiece(
    texts: Iterable[str], model_file: Path, vocab_size: int, model_type: str, max_texts: int
) -> Path:
    """Train a model on `texts` (one sentence per line; newlines inside a text split it) and write `model_file`."""
    model_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_file.parent) as scratch:
        corpus = Path(scratch) / "corpus.txt"
        count = 0
        with corpus.open("w", encoding="utf-8") as out:
            for text in texts:
                for line in text.split("\n"):
                    if line.strip():
                        out.write(line + "\n")
                        count += 1
        if count == 0:
            raise DataError("no training text to train SentencePiece on; the training split is empty.")
        prefix = Path(scratch) / "spm"
        spm.set_random_generator_seed(1234)
        started = time.perf_counter()
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                pad_id=0,
                bos_id=1,
                eos_id=2,
                unk_id=3,
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                character_coverage=0.9995,
                hard_vocab_limit=False,  # small corpora: a smaller vocabulary instead of an error
                input_sentence_size=max_texts if max_texts else 0,
                shuffle_input_sentence=True,
                num_threads=max(1, min(16, os.cpu_count() or 1)),
                minloglevel=2,
            )
        except RuntimeError as err:
            raise DataError(f"SentencePiece training failed on {count} lines: {err}") from None
        os.replace(str(prefix) + ".model", model_file)
        os.replace(str(prefix) + ".vocab", model_file.with_suffix(".vocab"))
    log.info(
        "trained SentencePiece (%d pieces requested) on %d lines in %.1fs -> %s",
        vocab_size,
        count,
        time.perf_counter() - started,
        model_file,
    )
    return model_file


def wait_for_model(model_file: Path, timeout: float = WAIT_SECONDS) -> Path:
    """Block until process 0 has written `model_file` (shared work directory)."""
    deadline = time.monotonic() + timeout
    while not model_file.exists():
        if time.monotonic() > deadline:
            raise DataError(
                f"waited {timeout:.0f}s for process 0 to write the SentencePiece model {str(model_file)!r}; "
                "use a work directory shared by all processes or set data.tokenizer_path to a prepared model."
            )
        time.sleep(2.0)
    return model_file
