"""A bfloat16 checkpoint keeps its stored dtype through jaxformer: bf16 tensors in, bf16 tensors out.

A tiny random Llama made by `transformers` and saved in bfloat16 (as published checkpoints are):
`hf.load` gives float32 by default (an exact upcast) or, with dtype="auto", the stored bfloat16;
`hf.save` writes each parameter in its own dtype (or dtype=) and the result equals the original
file bit for bit, whole and sharded, and loads in `transformers` with identical logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

import jax  # noqa: E402

from jaxformer import hf  # noqa: E402
from jaxformer.hf import files  # noqa: E402

CONFIG = dict(
    vocab_size=97, hidden_size=30, intermediate_size=37, num_hidden_layers=2, num_attention_heads=6,
    num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_llama_bf16")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).to(torch.bfloat16)
    model.save_pretrained(directory)
    return directory


def stored(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(safetensors_torch.load_file(str(path)))
    return out


def header_dtypes(directory: Path) -> set[str]:
    return {
        info["dtype"]
        for path in directory.glob("*.safetensors")
        for name, info in files.read_header(path)[0].items()
        if name != "__metadata__"
    }


def assert_bit_exact(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype == torch.bfloat16, name
        assert torch.equal(a[name].view(torch.int16), b[name].view(torch.int16)), name


def test_default_load_is_an_exact_float32_upcast(bf16_dir: Path) -> None:
    _, params, config = hf.load(bf16_dir)
    assert config.param_dtype == "float32"
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(params)} == {"float32"}
    table = np.asarray(params["embed"]["embedding"])
    np.testing.assert_array_equal(table, stored(bf16_dir)["model.embed_tokens.weight"].float().numpy())


@pytest.mark.parametrize("shard", [None, "2KB"])
def test_auto_load_then_save_is_bit_exact_bf16(bf16_dir: Path, tmp_path: Path, shard: str | None) -> None:
    _, params, config = hf.load(bf16_dir, dtype="auto")
    assert config.param_dtype == "bfloat16"
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(params)} == {"bfloat16"}
    out = hf.save(config, params, tmp_path / "out", max_shard_size=shard)
    assert (out / files.SAFETENSORS_INDEX).is_file() == (shard is not None)
    assert header_dtypes(out) == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert_bit_exact(stored(out), stored(bf16_dir))


def test_float32_params_saved_as_bf16_are_bit_exact_and_transformers_agrees(bf16_dir: Path, tmp_path: Path) -> None:
    _, params, config = hf.load(bf16_dir)
    out = hf.save(config, params, tmp_path / "out", dtype="bfloat16")
    assert_bit_exact(stored(out), stored(bf16_dir))
    tokens = torch.tensor([[1, 17, 29, 40, 8, 12, 5]])
    original = transformers.AutoModelForCausalLM.from_pretrained(bf16_dir, dtype="auto").eval()
    back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="auto").eval()
    assert back.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(original(tokens).logits, back(tokens).logits)


def test_float32_params_still_export_float32(bf16_dir: Path, tmp_path: Path) -> None:
    _, params, config = hf.load(bf16_dir)
    out = hf.save(config, params, tmp_path / "out")
    assert header_dtypes(out) == {"F32"} and "dtype" not in json.loads((out / "config.json").read_text())


def test_bad_dtype_is_one_clear_error(bf16_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^dtype='int8' is not supported; use one of"):
        hf.load(bf16_dir, dtype="int8")
    _, params, config = hf.load(bf16_dir)
    with pytest.raises(ValueError, match=r"^dtype='fp8' is not supported"):
        hf.save(config, params, tmp_path / "out", dtype="fp8")
