"""Load by Hub repo id (a cache laid out by hand, offline) and sharded safetensors written by save()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxformer import hf, presets
from jaxformer.hf import files, hub
from jaxformer.hf.convert import nested, param_shapes

REVISION = "0123456789abcdef0123456789abcdef01234567"


def random_params(config, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.2, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture
def gpt2_dir(tmp_path) -> Path:
    config = presets.get("tiny-gpt2")
    return hf.save(config, random_params(config), tmp_path / "gpt2")


def cache_repo(hub_cache: Path, repo_id: str, source: Path) -> Path:
    """models--org--name/{refs/main, snapshots/<rev>/...} as huggingface_hub lays out its cache."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(source, repo / "snapshots" / REVISION)
    return repo


def test_repo_id_loads_offline_from_the_hf_home_cache(gpt2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_repo(tmp_path / "home" / "hub", "someone/tiny-gpt2", gpt2_dir)
    _, expected, config = hf.load(gpt2_dir)
    for revision in (None, "main", REVISION):
        _, params, loaded = hf.load("someone/tiny-gpt2", revision=revision)
        assert loaded == config and same(expected, params)


def test_uncached_repo_offline_is_one_line_naming_repo_and_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hf.HubError) as err:
        hf.load("nobody/not-cached")
    message = str(err.value)
    assert "\n" not in message and "'nobody/not-cached'" in message
    assert "hf download nobody/not-cached" in message and "--include '*.safetensors'" in message
    assert "HF_HOME" in message and isinstance(err.value, ValueError)


def test_repo_id_and_local_path_are_told_apart(gpt2_dir, monkeypatch):
    monkeypatch.chdir(gpt2_dir.parent)
    assert not hub.is_repo_id("gpt2")  # an existing relative directory, not a repo
    assert hub.is_repo_id("org/model-1.5B") and not hub.is_repo_id("/abs/path") and not hub.is_repo_id("a/b/c")
    with pytest.raises(ValueError, match="revision"):
        hf.load(gpt2_dir, revision="main")


@pytest.mark.parametrize(("size", "expected"), [("200MB", 200 * 10**6), ("2GiB", 2 * 2**30), (1000, 1000)])
def test_parse_size(size, expected):
    assert files.parse_size(size) == expected


def test_parse_size_rejects_nonsense():
    with pytest.raises(ValueError, match="max_shard_size"):
        files.parse_size("lots")


def test_save_shards_with_an_index_and_loads_back_bit_exact(tmp_path):
    config = presets.get("tiny-gpt2")
    params = random_params(config, seed=3)
    single = hf.save(config, params, tmp_path / "single")
    tensors = load_file(str(single / "model.safetensors"))
    limit = max(t.nbytes for t in tensors.values()) + 1
    sharded = hf.save(config, params, tmp_path / "sharded", max_shard_size=limit)
    index = json.loads((sharded / files.SAFETENSORS_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (sharded / "model.safetensors").exists()
    assert shards[-1] == f"model-{len(shards):05d}-of-{len(shards):05d}.safetensors"
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    written = {}
    for shard in shards:
        part = load_file(str(sharded / shard))
        assert sum(t.nbytes for t in part.values()) <= limit
        written.update(part)
    assert all(np.array_equal(written[k], tensors[k]) for k in tensors)
    _, loaded, _ = hf.load(sharded)
    assert same(params, loaded)


def test_sharded_save_loads_in_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = presets.get("tiny-gpt2")
    params = random_params(config, seed=5)
    single = hf.save(config, params, tmp_path / "single")
    sharded = hf.save(config, params, tmp_path / "sharded", max_shard_size=20_000)
    assert (sharded / files.SAFETENSORS_INDEX).is_file()
    a = transformers.GPT2LMHeadModel.from_pretrained(single).eval()
    b = transformers.GPT2LMHeadModel.from_pretrained(sharded).eval()
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
