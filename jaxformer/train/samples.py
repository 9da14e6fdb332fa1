"""Samples and task metrics at evaluation time: decode a few held-out inputs and score them.

seq2seq: translations of `num_samples` inputs printed beside their references, plus
exact match and BLEU over the first `TASK_EVAL_EXAMPLES` held-out examples.
lm: a continuation of a few prompts. classification: nothing extra (accuracy is the metric).
Decoding goes through `jaxformer.decoding.texts` with a `SearchConfig` (greedy by default),
exactly as `inference` decodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxformer.config import ModelConfig, SearchConfig
from jaxformer.decoding import bleu, exact_match
from jaxformer.decoding.texts import generate_texts, translate_texts

TASK_EVAL_EXAMPLES = 64
PROMPT_CHARS = 32
CONTINUATION_TOKENS = 48
EXTRA_TARGET_TOKENS = 8  # translations may run this far past the longest reference


def task_metrics(
    config: ModelConfig,
    params: Any,
    pipeline: Any,
    num_samples: int,
    writer: Any,
    search: SearchConfig | None = None,
) -> dict[str, float]:
    """Print samples; return task metrics (exact match, BLEU) for sequence outputs.

    search: the decoding settings (default greedy); its max_new_tokens, when set, caps the lengths below.
    """
    if config.family == "encoder_only" or num_samples == 0:
        return {}
    search = search or SearchConfig()
    tokenizer = pipeline.tokenizer
    if config.family == "encoder_decoder":
        examples = pipeline.examples("validation", max(num_samples, TASK_EVAL_EXAMPLES))
        sources = [s for s, _ in examples]
        references = [r for _, r in examples]
        longest = max(len(tokenizer.encode(r)) for r in references) + EXTRA_TARGET_TOKENS
        max_new = min(config.max_len, search.new_tokens(longest))
        hypotheses = translate_texts(
            config, params, pipeline, sources, dataclasses.replace(search, max_new_tokens=max_new)
        )
        for src, ref, hyp in list(zip(sources, references, hypotheses, strict=True))[:num_samples]:
            writer.print(f"  input: {src!r}\n  reference: {ref!r}\n  model: {hyp!r}")
        scores = {"eval_exact_match": exact_match(hypotheses, references)}
        if pipeline.config.source != "synthetic":  # a digit string is one "word": BLEU says nothing there
            scores["eval_bleu"] = bleu(hypotheses, references)
        return scores
    examples = pipeline.examples("validation", num_samples)
    prompts = [pipeline.encode_input(text[:PROMPT_CHARS]) for text, _ in examples]
    new_tokens = min(search.new_tokens(CONTINUATION_TOKENS), config.max_len - max(len(p) for p in prompts))
    if new_tokens <= 0:
        return {}
    continuations = generate_texts(
        config, params, tokenizer, prompts, dataclasses.replace(search, max_new_tokens=new_tokens)
    )
    for prompt, text in zip(prompts, continuations, strict=True):
        writer.print(f"  prompt: {tokenizer.decode(prompt)!r}\n  model: {text!r}")
    return {}
