"""Beam search against greedy decoding on the same encoder-decoder, batch and lengths.

    python -m benchmarks.beam_speed [--batch 64] [--source-len 24] [--new-tokens 40] [--beams 4] [--json OUT]

Model: the shape of experiments/multi30k_transformer.py (3 encoder + 3 decoder layers, width 256,
4 heads, FFN 1024, pre-LayerNorm, vocabulary 8000), random init, float32; random source rows.
No EOS, so every call runs all `--new-tokens` steps and the two searches do the same number of
decoder steps. Times `decoding.translate` (greedy) and `decoding.beam_search` (W beams,
alpha 0.6): best of `--repeats` calls after a compiling call. Also checks that beam search with
one beam returns the greedy tokens (the property the beam tests rely on).
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import numpy as np

from benchmarks.common import save_json
from benchmarks.decode_speed import timed
from jaxformer import decoding, models, presets
from jaxformer.config import ModelConfig

BOS_ID = 1


def multi30k_shape(**changes: Any) -> ModelConfig:
    shape = dict(d_model=256, num_heads=4, d_ff=1024, num_layers=3, num_decoder_layers=3, max_len=128)
    shape.update(vocab_size=8000, norm_position="pre", dropout_rate=0.0, attention_dropout_rate=0.0)
    shape.update(changes)
    return presets.get("transformer-base", **shape)


def measure(
    batch: int = 64, source_len: int = 24, new_tokens: int = 40, beams: int = 4, repeats: int = 3, **shape: Any
) -> dict[str, Any]:
    """{"greedy_s", "beam_s", "beam_over_greedy", "beam1_equals_greedy", ...} for one setting."""
    config = multi30k_shape(**shape)
    params = models.init_params(config, jax.random.PRNGKey(0))
    source = np.random.default_rng(0).integers(3, config.vocab_size, (batch, source_len)).astype(np.int32)
    valid = np.ones_like(source, dtype=bool)

    def greedy() -> np.ndarray:
        return decoding.translate(config, params, source, source_valid=valid, bos_id=BOS_ID, max_new_tokens=new_tokens)

    def beam(width: int) -> np.ndarray:
        result = decoding.beam_search(
            config, params, source, source_valid=valid, bos_id=BOS_ID, max_new_tokens=new_tokens, beam_size=width
        )
        return result.sequences[:, 0]

    greedy_s, greedy_tokens = timed(greedy, repeats)
    beam_s, _ = timed(lambda: beam(beams), repeats)
    return {
        "batch": batch,
        "source_len": source_len,
        "new_tokens": new_tokens,
        "beams": beams,
        "greedy_s": round(greedy_s, 4),
        "beam_s": round(beam_s, 4),
        "beam_over_greedy": round(beam_s / greedy_s, 2),
        "beam_ms_per_step": round(beam_s / new_tokens * 1e3, 2),
        "beam1_equals_greedy": bool(np.array_equal(beam(1), np.asarray(greedy_tokens))),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--source-len", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    result = measure(args.batch, args.source_len, args.new_tokens, args.beams, args.repeats)
    print(
        f"batch {result['batch']}, source {result['source_len']}, {result['new_tokens']} new tokens: "
        f"greedy {result['greedy_s']:.3f} s, beam {result['beams']} {result['beam_s']:.3f} s "
        f"({result['beam_over_greedy']:.2f}x greedy, {result['beam_ms_per_step']:.1f} ms per step); "
        f"beam 1 == greedy: {result['beam1_equals_greedy']}"
    )
    if args.json:
        save_json(args.json, {"device": jax.devices()[0].device_kind, "results": result})


if __name__ == "__main__":
    main()
