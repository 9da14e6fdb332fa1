"""jaxformer.hf without transformers: bad checkpoints fail with one clear error naming the keys; file layouts; fine-tuning.

Checkpoints are written by jaxformer.hf.save from tiny presets, then damaged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxformer import hf, models, presets
from jaxformer.hf.convert import nested, param_shapes


def random_params(config, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.2, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


@pytest.fixture
def gpt2_dir(tmp_path) -> Path:
    config = presets.get("tiny-gpt2")
    return hf.save(config, random_params(config), tmp_path / "gpt2")


def edit_tensors(directory: Path, change) -> None:
    tensors = load_file(str(directory / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def test_unsupported_architecture_names_model_type(gpt2_dir):
    edit_config(gpt2_dir, model_type="mixtral", architectures=["MixtralForCausalLM"])
    with pytest.raises(
        ValueError, match=r"unsupported architecture model_type='mixtral'.*\['gpt2', 'bert', 't5', 'marian', 'llama'"
    ):
        hf.load(gpt2_dir)


def test_missing_tensor_is_named(gpt2_dir):
    edit_tensors(gpt2_dir, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(ValueError, match=r"missing tensors \[h\.1\.mlp\.c_fc\.weight\]") as err:
        hf.load(gpt2_dir)
    assert "unexpected" not in str(err.value)


def test_unexpected_tensor_is_named(gpt2_dir):
    edit_tensors(gpt2_dir, lambda t: t.update({"transformer.h.0.attn.rotary.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"unexpected tensors \[h\.0\.attn\.rotary\.weight\]") as err:
        hf.load(gpt2_dir)
    assert "missing" not in str(err.value)


def test_config_with_more_layers_than_weights_names_missing_layer(gpt2_dir):
    edit_config(gpt2_dir, n_layer=3)
    with pytest.raises(ValueError, match=r"missing tensors \[h\.2\.attn\.c_attn\.bias, h\.2\.attn\.c_attn\.weight"):
        hf.load(gpt2_dir)


def test_shape_mismatch_names_tensor_and_shapes(gpt2_dir):
    edit_config(gpt2_dir, n_inner=40)
    with pytest.raises(
        ValueError,
        match=r"shapes \(file vs implied by config\.json\) differ: \[h\.0\.mlp\.c_fc\.weight: \(36, 37\) vs \(36, 40\)",
    ):
        hf.load(gpt2_dir)


def test_pickle_needs_opt_in(gpt2_dir):
    (gpt2_dir / "model.safetensors").unlink()
    (gpt2_dir / "pytorch_model.bin").write_bytes(b"not read without allow_pickle")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*pickle.*allow_pickle=True"):
        hf.load(gpt2_dir)


def test_pickle_loads_with_opt_in(gpt2_dir):
    torch = pytest.importorskip("torch")
    tensors = load_file(str(gpt2_dir / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, gpt2_dir / "pytorch_model.bin")
    _, expected, _ = hf.load(gpt2_dir)
    (gpt2_dir / "model.safetensors").unlink()
    _, params, _ = hf.load(gpt2_dir, allow_pickle=True)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        hf.load(tmp_path / "empty")


def test_untied_copy_that_differs_is_rejected(tmp_path):
    config = presets.get("tiny-bert", encoder_head="mlm")
    out = hf.save(config, random_params(config), tmp_path / "bert")
    edit_tensors(out, lambda t: t.update({"cls.predictions.decoder.weight": np.ones((99, 36), np.float32)}))
    with pytest.raises(ValueError, match=r"'cls\.predictions\.decoder\.weight' should be a tied copy"):
        hf.load(out)


def test_export_rejects_configs_without_hf_equivalent(tmp_path):
    # Learned positions make it GPT-2's to export; RMSNorm and grouped-query heads have no GPT-2 equivalent.
    gpt2_like = presets.get("tiny-llama", position="learned")
    with pytest.raises(ValueError, match=r"cannot export to Hugging Face gpt2: .*norm='rmsnorm'.*num_kv_heads=2"):
        hf.save(gpt2_like, {}, tmp_path / "llama")
    transformer = presets.get("tiny-transformer")
    with pytest.raises(
        ValueError, match=r"cannot export to Hugging Face marian: sinusoidal_layout='interleaved'.*norm_eps=1e-06"
    ):
        hf.save(transformer, {}, tmp_path / "transformer")
    config = presets.get("tiny-gpt2")
    with pytest.raises(ValueError, match=r"params do not match the config: missing \[decoder/final_norm/bias"):
        hf.save(config, {"embed": {"embedding": jnp.zeros((99, 36))}}, tmp_path / "gpt2")


def test_load_tokenizer_without_tokenizer_json(gpt2_dir):
    (gpt2_dir / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json .*\['vocab\.json'\]"):
        hf.load_tokenizer(gpt2_dir)


# Layouts -------------------------------------------------------------------------------------


def test_hub_cache_layout_and_snapshot_dir_load(gpt2_dir, tmp_path):
    """models--org--name/{blobs, refs/main, snapshots/<rev>/file -> ../../blobs/<hash>}, as huggingface_hub writes it."""
    repo = tmp_path / "hub" / "models--someone--tiny-gpt2"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for index, name in enumerate(["config.json", "model.safetensors"]):
        shutil.copyfile(gpt2_dir / name, repo / "blobs" / f"blob{index}")
        os.symlink(Path("..") / ".." / "blobs" / f"blob{index}", snapshot / name)
    _, expected, config = hf.load(gpt2_dir)
    for path in (repo, snapshot):
        _, params, loaded_config = hf.load(path)
        assert loaded_config == config
        assert all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params), strict=True)
        )


def test_scanned_params_export_like_unrolled(tmp_path):
    config = presets.get("tiny-t5")
    params = random_params(config, seed=1)
    unrolled = hf.save(config, params, tmp_path / "unrolled")
    scanned_config = config.replace(scan_layers=True)
    scanned = {k: v for k, v in params.items()}
    from jaxformer.models import stack_layer_params

    scanned["encoder"] = stack_layer_params(params["encoder"], config.num_layers)
    scanned["decoder"] = stack_layer_params(params["decoder"], config.decoder_layers)
    out = hf.save(scanned_config, scanned, tmp_path / "scanned")
    a, b = load_file(str(unrolled / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_save_copies_tokenizer_files_and_extra_config(gpt2_dir, tmp_path):
    source = tmp_path / "tok"
    source.mkdir()
    (source / "tokenizer.json").write_text("{}")
    (source / "merges.txt").write_text("#version: 0.2\n")
    _, params, config = hf.load(gpt2_dir)
    out = hf.save(config, params, tmp_path / "out", tokenizer_dir=source, extra_config={"eos_token_id": 2})
    assert (out / "tokenizer.json").read_text() == "{}" and (out / "merges.txt").is_file()
    assert hf.read_special_tokens(out) == {"eos_token_id": 2}


def test_finetune_init_keeps_the_body_and_adds_a_fresh_head(tmp_path):
    config = presets.get("tiny-bert", encoder_head="mlm", pooler=False)
    out = hf.save(config, random_params(config, seed=2), tmp_path / "bert")
    _, loaded, _ = hf.load(out)
    tuned_config, params = hf.finetune_init(out, encoder_head="classification", num_classes=3, dropout_rate=0.2, seed=1)
    assert tuned_config == config.replace(encoder_head="classification", num_classes=3, dropout_rate=0.2)
    assert "mlm_head" not in params and params["classifier"]["dense"]["kernel"].shape == (36, 3)
    assert float(jnp.std(params["pooler"]["dense"]["kernel"])) > 0  # initialised, not zeros
    for name in ("embed", "embedding", "encoder"):
        for a, b in zip(jax.tree.leaves(loaded[name]), jax.tree.leaves(params[name]), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    scanned_config, scanned = hf.finetune_init(out, scan_layers=True)
    assert scanned["encoder"]["layers"]["mlp"]["up_kernel"].shape == (3, 36, 37)
    model = models.build(scanned_config)
    logits = jax.jit(model.apply)({"params": scanned}, jnp.ones((2, 5), jnp.int32))["logits"]
    assert logits.shape == (2, 5, 99) and bool(jnp.all(jnp.isfinite(logits)))
    with pytest.raises(ValueError, match=r"change pretrained parameters \[embed/embedding"):
        hf.finetune_init(out, d_model=40, num_heads=4)


def test_sharded_checkpoint_loads_like_a_single_file(gpt2_dir):
    tensors = load_file(str(gpt2_dir / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(gpt2_dir / shard), metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (gpt2_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _, expected, _ = hf.load(gpt2_dir)
    (gpt2_dir / "model.safetensors").unlink()
    _, params, _ = hf.load(gpt2_dir)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params), strict=True))


def test_bfloat16_checkpoint_is_read_and_upcast(gpt2_dir):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    tensors = {k: torch.from_numpy(v).bfloat16() for k, v in load_file(str(gpt2_dir / "model.safetensors")).items()}
    save_torch(tensors, str(gpt2_dir / "model.safetensors"), metadata={"format": "pt"})
    _, params, _ = hf.load(gpt2_dir)
    expected = tensors["transformer.wte.weight"].float().numpy()  # bfloat16 values, exactly representable in float32
    assert params["embed"]["embedding"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(params["embed"]["embedding"]), expected)
