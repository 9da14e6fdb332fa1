"""Tiny Gemma 2 / Gemma 3 (soft-capping, sandwich norms, sliding windows, local RoPE base, scanned layers)
train under jit sharding with the same loss as on one device: fsdp=8 and fsdp=4 x tensor=2 on 8 fake CPU
devices (a subprocess, tests/support/gemma_sharding_worker.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from support.fake_devices import SUPPORT, launch, result_of

# ~45 s of subprocess training. The default suite keeps Llama's layouts (tests/train/test_llm_sharded_training.py):
# Gemma shares the block and its sharding rules; what differs (soft-caps, norms, windows) is elementwise.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    return result_of(launch([str(SUPPORT / "gemma_sharding_worker.py")], devices=8), timeout=600)


@pytest.mark.parametrize("model", ["tiny-gemma2", "tiny-gemma3 scanned"])
@pytest.mark.parametrize("layout", ["fsdp=8", "fsdp=4 x tensor=2"])
def test_gemma_losses_match_single_device(runs: dict[str, Any], model: str, layout: str) -> None:
    got, want = runs[model][layout], runs[model]["1 device"]
    print(f"{model} {layout}: {got} vs 1 device {want}")
    assert len(got) == len(want) == 3
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1e-5
    assert all(math.isfinite(x) for x in want)
    assert runs[model][f"{layout} split params"] >= runs[model]["params"] // 2  # most weights really are split
