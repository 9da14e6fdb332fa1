"""Autoregressive decoding over the KV cache and text metrics.

    generate(config, params, prompts, ..., search)  decoder-only: greedy / sample / beam   -> [B, N]
    translate(config, params, source, ...)      encoder-decoder: greedy / sample / beam -> [B, N]
    beam_search(config, params, inputs, ...)    both families -> BeamResult([B, W, N], [B, W], [B, W])
    speculative_generate(config, params, draft_config, draft_params, prompts, ...)
                                                draft proposes, target verifies -> SpeculativeResult([B, N])
    init_cache(config, batch, cache_length)     a zero "cache" collection for manual decoding
    bleu / chrf / exact_match / perplexity      evaluation helpers

Settings: one `jaxformer.config.SearchConfig` (or its field names as keywords), checked once.

Modules: inputs (checks, prompt packing), cache, steps (prefill and one-token
step per family), sampling, search (greedy/sampling loop), beam, speculative
(draft and target), metrics, texts (text in, text out with a run's pipeline), evaluate (a split's loss/accuracy, text scores).
"""

from jaxformer.decoding.beam import BeamResult, beam_search, length_penalty
from jaxformer.decoding.cache import cache_batch_axes, gather_beams, gather_cache, init_cache, repeat_cache
from jaxformer.decoding.inputs import pack_prompts, positions_from_valid
from jaxformer.decoding.metrics import bleu, chrf, exact_match, perplexity
from jaxformer.decoding.sampling import apply_top_k, apply_top_p
from jaxformer.decoding.search import generate, translate
from jaxformer.decoding.speculative import SpeculativeResult, speculative_generate

__all__ = [
    "BeamResult",
    "SpeculativeResult",
    "apply_top_k",
    "apply_top_p",
    "beam_search",
    "bleu",
    "cache_batch_axes",
    "chrf",
    "exact_match",
    "gather_beams",
    "gather_cache",
    "generate",
    "init_cache",
    "length_penalty",
    "pack_prompts",
    "perplexity",
    "positions_from_valid",
    "repeat_cache",
    "speculative_generate",
    "translate",
]
