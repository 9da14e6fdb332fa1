"""benchmarks/int8_decode.py end to end on a tiny run (a few training steps, a few tokens)."""

from __future__ import annotations

import pytest

from benchmarks import int8_decode


@pytest.mark.slow  # trains a tiny run and builds the torch peers (about 40 s on 2 loaded cores)
def test_int8_decode_benchmark_smoke(tmp_path):
    if not (int8_decode.DATA / "input.txt").is_file():
        pytest.skip("tinyshakespeare is not in ../shared/data")
    r = int8_decode.run(tmp_path / "run", steps=5, block=40, new_tokens=8, prompts=2, windows=4, repeats=1, smoke=True)
    assert set(r["rows"]) == {"jaxformer fp32", "jaxformer int8", "transformers fp32", "torch dynamic int8"}
    assert all(row["new_tokens_per_s"] > 0 for row in r["rows"].values())
    assert r["transformers_agreement_vs_fp32"] == 1.0  # the same weights through jaxformer.hf
    assert 0.0 <= r["greedy_agreement_int8_vs_fp32"] <= 1.0
    assert abs(r["perplexity_change"]) < 0.05
    assert r["kernel_bytes"]["ratio"] < 0.3
    assert r["machine"]["cpu"]
