"""Samples and task metrics at evaluation time: decode a few held-out inputs and score them.

seq2seq: greedy translations of `num_samples` inputs printed beside their references, plus
exact match and BLEU over the first `TASK_EVAL_EXAMPLES` held-out examples.
lm: a greedy continuation of a few prompts. classification: nothing extra (accuracy is the metric).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxformer import decoding
from jaxformer.config import ModelConfig

TASK_EVAL_EXAMPLES = 64
PROMPT_CHARS = 32
CONTINUATION_TOKENS = 48


def _pad_rows(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad `rows` to [B, width] (default: the longest row); returns (tokens, valid)."""
    width = max(max(len(r) for r in rows), width or 0)
    tokens = np.full((len(rows), width), pad_id, np.int32)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens, tokens != pad_id


def translate_texts(
    config: ModelConfig,
    params: Any,
    pipeline: Any,
    texts: list[str],
    max_new_tokens: int,
    beam_size: int = 1,
    *,
    method: str | None = None,
    width: int | None = None,
    **options: Any,
) -> list[str]:
    """Translations of `texts` with a trained encoder-decoder, encoded as in training.

    method: "greedy" | "sample" | "beam" (default: beam when beam_size > 1, else greedy);
    options: alpha, temperature, top_k, top_p, seed (see `decoding.translate`). `width` pads
    the sources to at least that many columns, so batches of mixed lengths share one compilation.
    """
    tokenizer = pipeline.tokenizer
    rows = [pipeline.encode_input(t)[: config.max_len] for t in texts]
    source, source_valid = _pad_rows(rows, tokenizer.pad_id, width)
    method = method or ("beam" if beam_size > 1 else "greedy")
    outputs = decoding.translate(
        config,
        params,
        source,
        source_valid,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        max_new_tokens=max_new_tokens,
        method=method,
        beam_size=beam_size,
        **options,
    )
    return [tokenizer.decode([int(t) for t in row]) for row in np.asarray(outputs)]


def task_metrics(config: ModelConfig, params: Any, pipeline: Any, num_samples: int, writer: Any) -> dict[str, float]:
    """Print samples; return task metrics (exact match, BLEU) for sequence outputs."""
    if config.family == "encoder_only" or num_samples == 0:
        return {}
    tokenizer = pipeline.tokenizer
    if config.family == "encoder_decoder":
        examples = pipeline.examples("validation", max(num_samples, TASK_EVAL_EXAMPLES))
        sources = [s for s, _ in examples]
        references = [r for _, r in examples]
        max_new = min(config.max_len, max(len(tokenizer.encode(r)) for r in references) + 8)
        hypotheses = translate_texts(config, params, pipeline, sources, max_new)
        for src, ref, hyp in list(zip(sources, references, hypotheses, strict=True))[:num_samples]:
            writer.print(f"  input: {src!r}\n  reference: {ref!r}\n  model: {hyp!r}")
        scores = {"eval_exact_match": decoding.exact_match(hypotheses, references)}
        if pipeline.config.source != "synthetic":  # a digit string is one "word": BLEU says nothing there
            scores["eval_bleu"] = decoding.bleu(hypotheses, references)
        return scores
    examples = pipeline.examples("validation", num_samples)
    prompts = [pipeline.encode_input(text[:PROMPT_CHARS]) for text, _ in examples]
    new_tokens = min(CONTINUATION_TOKENS, config.max_len - max(len(p) for p in prompts))
    if new_tokens <= 0:
        return {}
    outputs = np.asarray(decoding.generate(config, params, prompts, max_new_tokens=new_tokens, eos_id=tokenizer.eos_id))
    for prompt, row in zip(prompts, outputs, strict=True):
        writer.print(f"  prompt: {tokenizer.decode(prompt)!r}\n  model: {tokenizer.decode([int(t) for t in row])!r}")
    return {}
