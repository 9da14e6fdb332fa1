"""Text in, text out: encode with a run's pipeline, decode with a `SearchConfig`, detokenize.

    translate_texts(config, params, pipeline, texts, search, width=None)   one batch  -> list[str]
    translate_batched(config, params, pipeline, texts, search, batch_size) any count, sorted by length
    generate_texts(config, params, tokenizer, prompts, search)             encoded prompts -> new text

Used by training-time samples (`train.samples`) and by `inference` / the CLI / the demo, so both
decode a text the same way. `pipeline` is a `data.Pipeline` (its `encode_input` encodes as in training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding.search import generate, translate

MIN_BUCKET = 8  # the narrowest padded source width


def pad_rows(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad `rows` to [B, width] (default: the longest row); returns (tokens [B, W], valid [B, W])."""
    width = max(max(len(r) for r in rows), width or 0)
    tokens = np.full((len(rows), width), pad_id, np.int32)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens, tokens != pad_id


def bucket(length: int) -> int:
    """The padded width for sources of `length` tokens: a power of two >= MIN_BUCKET (each compiles once)."""
    return max(MIN_BUCKET, 1 << (length - 1).bit_length())


def _detokenize(tokenizer: Any, outputs: np.ndarray) -> list[str]:
    return [tokenizer.decode([int(t) for t in row]) for row in np.asarray(outputs)]


def translate_texts(
    config: ModelConfig, params: Any, pipeline: Any, texts: list[str], search: SearchConfig, width: int | None = None
) -> list[str]:
    """Translations of `texts` (one batch) with a trained encoder-decoder, encoded as in training.

    `width` pads the sources to at least that many columns, so batches of mixed lengths share one compilation.
    """
    tokenizer = pipeline.tokenizer
    rows = [pipeline.encode_input(t)[: config.max_len] for t in texts]
    source, source_valid = pad_rows(rows, tokenizer.pad_id, width)
    outputs = translate(config, params, source, source_valid, search, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    return _detokenize(tokenizer, outputs)


def translate_batched(
    config: ModelConfig, params: Any, pipeline: Any, texts: list[str], search: SearchConfig, batch_size: int
) -> list[str]:
    """Sort by length, decode fixed-size batches padded to a width bucket (few compilations), restore order."""
    lengths = [len(pipeline.encode_input(t)) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    rows = min(batch_size, len(texts))
    results: list[str] = [""] * len(texts)
    for first in range(0, len(order), rows):
        chunk = order[first : first + rows]
        batch = [texts[i] for i in chunk] + [texts[chunk[-1]]] * (rows - len(chunk))  # same batch shape
        width = min(config.max_len, bucket(max(lengths[i] for i in chunk)))
        for i, text in zip(chunk, translate_texts(config, params, pipeline, batch, search, width), strict=False):
            results[i] = text
    return results


def generate_texts(
    config: ModelConfig, params: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], search: SearchConfig
) -> list[str]:
    """The new text after each encoded prompt (stops at the tokenizer's EOS)."""
    outputs = generate(config, params, prompts, None, search, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    return _detokenize(tokenizer, outputs)
