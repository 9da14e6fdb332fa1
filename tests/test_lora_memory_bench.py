"""benchmarks/lora_memory.py on tiny shapes: the byte accounting it reports and a timed step of each kind."""

from __future__ import annotations

import math

import pytest

from benchmarks import lora_memory
from jaxformer import presets


def test_memory_counts_adapters_and_their_moments_only():
    config = presets.get("tiny-gpt2")
    row = lora_memory.memory(config, rank=2, targets=("query", "value"))
    layers, width, heads = config.num_layers, config.d_model, config.num_heads
    per_kernel = width * 2 + 2 * heads * config.dim_per_head  # A [D, r] + B [r, N, H]
    assert row["adapter_parameters"] == layers * 2 * per_kernel
    ours, full = row["lora_bytes"], row["full_bytes"]
    assert ours["params"] == 4 * row["adapter_parameters"]
    assert 8 * row["adapter_parameters"] <= ours["opt_state"] <= 8 * row["adapter_parameters"] + 64  # mu, nu, counts
    assert 8 * row["base_parameters"] <= full["opt_state"] <= 8 * row["base_parameters"] + 64
    assert math.isclose(row["ratio_checkpoint"], ours["checkpoint"] / full["checkpoint"])


@pytest.mark.slow  # ~11 s; a benchmark's smoke run
def test_step_time_runs_both_steps():
    shape = {"layers": 1, "width": 32, "heads": 2, "length": 16, "batch": 2, "vocab": 97}
    out = lora_memory.step_time(shape, rank=2, targets=("query", "value"), repeats=1)
    assert out["full_step_s"] > 0 and out["lora_step_s"] > 0 and out["ratio_wall"] > 0
