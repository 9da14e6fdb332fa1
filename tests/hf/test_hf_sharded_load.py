"""`hf.load(..., mesh=/shardings=)` puts each tensor straight into its NamedSharding, equal to a plain load.

A tiny random Llama made by `transformers` (sizes that fsdp=8 and tensor=2 split: D = 48, F = 40,
V = 96, 6 heads, 2 kv heads) is saved as sharded safetensors; a subprocess with 8 fake CPU devices
(tests/support/sharded_load_worker.py) loads it plainly and onto two meshes. The memory side
(no second host copy) is measured by benchmarks/load_speed.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.fake_devices import TESTS, launch, result_of

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LAYOUTS = ["fsdp=8", "data=2 x fsdp=2 x tensor=2"]
# Logical axes -> mesh axes under DEFAULT_RULES (vocab, heads, kv_heads, mlp -> tensor; embed -> fsdp),
# stated here independently of the code; a mesh axis of size 1 still appears in the spec.
SPECS = {
    "embed/embedding": ["tensor", "fsdp"],  # [V, D]
    "decoder/layers_0/self_attention/query_kernel": ["fsdp", "tensor", None],  # [D, N, H]
    "decoder/layers_0/self_attention/key_kernel": ["fsdp", "tensor", None],  # [D, K, H]
    "decoder/layers_0/self_attention/out_kernel": ["tensor", None, "fsdp"],  # [N, H, D]
    "decoder/layers_1/mlp/up_kernel": ["fsdp", "tensor"],  # [D, F]
    "decoder/layers_1/mlp/down_kernel": ["tensor", "fsdp"],  # [F, D]
    "lm_head/lm_head/kernel": ["fsdp", "tensor"],  # [D, V]
}
SPLIT = {"fsdp=8": {"fsdp": 8}, "data=2 x fsdp=2 x tensor=2": {"fsdp": 2, "tensor": 2}}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory: Path = tmp_path_factory.mktemp("tiny_llama_sharded")
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(directory, max_shard_size="40KB")
    assert (directory / "model.safetensors.index.json").is_file()
    return result_of(launch([str(TESTS / "support" / "sharded_load_worker.py"), str(directory)], devices=8))


@pytest.mark.parametrize("how", ["mesh", "shardings"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_load_equals_plain_load_with_the_training_shardings(loaded: dict, layout: str, how: str) -> None:
    report = loaded[f"{layout} {how}"]
    assert set(report) == set(loaded["shapes"])
    for path, entry in report.items():
        assert entry["diff"] == 0.0, path
        assert entry["expected"], (path, entry["spec"])
        assert entry["devices"] == 8 and entry["dtype"] == "float32"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_device_holds_only_its_slice(loaded: dict, layout: str) -> None:
    report = loaded[f"{layout} mesh"]
    for path, spec in SPECS.items():
        entry = report[path]
        assert entry["spec"][: len(spec)] == spec and all(a is None for a in entry["spec"][len(spec) :]), (path, entry)
        full = loaded["shapes"][path]
        split = SPLIT[layout]
        want = [
            size // split.get(axis, 1) if axis else size
            for size, axis in zip(full, entry["spec"] + [None] * 3, strict=False)
        ]
        assert entry["shard"] == want, (path, entry["shard"], want)


def test_bad_shardings_are_one_clear_error(loaded: dict) -> None:
    message = loaded["bad shardings"]
    assert message.startswith("shardings= must be a nested dict with one jax.sharding.Sharding per parameter")
    assert "missing [" in message
