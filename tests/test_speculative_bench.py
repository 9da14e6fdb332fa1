"""benchmarks/speculative.py on a tiny pair trained for 3 steps: every contender runs, speculative == greedy."""

from __future__ import annotations

import math

import pytest

from benchmarks import speculative


@pytest.mark.slow  # trains two runs and exports them to transformers: over 20 s on 2 cores
def test_speculative_benchmark_times_every_contender(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 200, encoding="utf-8")
    results = speculative.run(
        tmp_path / "runs",
        data,
        steps=(3, 3),
        block=32,
        batch=4,
        prompt_chars=8,
        new_tokens=8,
        draft_tokens=2,
        repeats=1,
        smoke=True,
    )
    assert results["speculative_equals_greedy"] is True
    assert 0.0 <= results["acceptance_rate"] <= 1.0 and results["rounds"] >= 1
    for name in ("jaxformer greedy", "jaxformer speculative", "transformers greedy", "transformers assisted"):
        row = results["rows"][name]
        assert row["seconds"] > 0 and math.isfinite(row["new_tokens_per_s"])
    assert results["transformers_greedy_agreement"] > 0.5  # same weights on both sides
    assert set(results["ratios"]) >= {"speculative_vs_greedy", "speculative_vs_transformers_assisted"}
    assert isinstance(results["machine_loaded"], bool) and results["machine"]["cpu"]
    speculative.print_report(results)
    out = capsys.readouterr().out
    assert "CPU: " in out and "acceptance rate" in out
