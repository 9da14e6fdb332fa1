"""The decoder-LLM layer features train under jit sharding with the single-device losses.

One subprocess with 8 fake CPU devices (tests/support/llm_sharded_worker.py): a tiny decoder with
llama3 RoPE scaling, Qwen2 q/k/v biases, Qwen3 q/k RMSNorm (head_dim != d_model / N) and a Mistral
sliding window shorter than the sequence, scanned (window in one layer) and unrolled (window in all),
each 3 adamw steps on 1 device, fsdp=8 and data=2 x fsdp=2 x tensor=2; losses agree within 1e-5.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.fake_devices import TESTS, launch, result_of

MODELS = ["scanned, window in layer 0 only", "unrolled, window in every layer"]
LAYOUTS = ["fsdp=8", "data=2 x fsdp=2 x tensor=2"]


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    return result_of(launch([str(TESTS / "support" / "llm_sharded_worker.py")], devices=8), timeout=600)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model", MODELS)
def test_sharded_losses_equal_single_device(trained: dict[str, Any], model: str, layout: str) -> None:
    reference, losses = trained[model]["1 device"], trained[model][layout]
    print(f"{model} {layout}: {losses} (1 device: {reference})")
    assert len(losses) == len(reference) == 3
    assert max(abs(a - b) for a, b in zip(losses, reference, strict=True)) <= 1e-5
    assert len({round(x, 4) for x in reference}) == 3, "the loss should move: the steps must really train"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model", MODELS)
def test_parameters_are_really_split(trained: dict[str, Any], model: str, layout: str) -> None:
    # Every weight matrix and table has an axis the layout splits (D = 48 over fsdp=8; heads, F, V over tensor=2).
    split = trained[model]["split"][layout]
    weights = [name for name in split if name.endswith(("kernel']", "embedding']"))]
    assert len(weights) >= 8 and all(split[name] for name in weights), split
