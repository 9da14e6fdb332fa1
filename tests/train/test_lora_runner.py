"""`lora.*` through `jaxformer train`: adapters-only state and checkpoints, exact resume, every strategy.

- A LoRA run on a tiny GPT-2 made by `transformers`: the checkpoint's params are the adapters alone
  and its optimizer state is adapter-sized (the base is absent), the checkpoint records the base's
  fingerprint; the loss goes down; `export --hf` (merged) and `export --peft` loaded by `peft` onto
  the original base give jaxformer's logits (1e-5).
- The same run under `parallelism=pmap` and on an fsdp=2 mesh (2 fake CPU devices) logs the losses
  of the single-device run (same XLA flags; reduction order aside, 1e-5).
- SIGKILL mid-run, then resume: the base is re-imported and checked, and every logged loss is
  bit-identical to the uninterrupted run's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from support.fake_devices import launch
from support.finetune_models import corpus, lm_settings, losses, tiny_bert, tiny_gpt2, write_experiment
from support.kill_resume import assert_bit_identical, kill_after_checkpoint

from jaxformer import cli as jaxformer_cli
from jaxformer import models
from jaxformer.data import tokenizer_store
from jaxformer.hf import run_export
from jaxformer.train import checkpoint as checkpoint_lib

LORA = ("--config.lora.rank=4", "--config.lora.alpha=16", "--config.lora.targets=['query','value','up','out']")
TEXTS = ["the king is here now", "good night sweet lady", "what shall my lord"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    gpt2 = tiny_gpt2(root / "gpt2")
    train_file = root / "train.txt"
    train_file.write_text("\n".join(corpus(240, seed=2)) + "\n", encoding="utf-8")
    settings = {**lm_settings(str(gpt2), train_file, steps=12), "train.learning_rate": 0.05}
    return root, gpt2, write_experiment(root / "lora_lm.py", settings)


def train_in_process(experiment: Path, workdir: Path, *overrides: str) -> None:
    assert jaxformer_cli.main(["train", "--config", str(experiment), "--workdir", str(workdir), *overrides]) == 0


def leaf_names(tree) -> set[str]:
    return {str(getattr(path[-1], "key", path[-1])) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_lora_run_checkpoints_adapters_only_and_exports_match_peft(setup, tmp_path):
    import peft
    import torch
    import transformers

    _, gpt2, experiment = setup
    workdir = tmp_path / "run"
    train_in_process(experiment, workdir, *LORA)
    logged = losses(workdir)
    assert len(logged) == 12 and np.mean(logged[-3:]) < np.mean(logged[:3]) - 0.05, logged

    step_dir = workdir / "checkpoints" / "12"
    state = checkpoint_lib._state_metadata(step_dir)
    params, opt_state = state["params"], state["opt_state"]
    assert leaf_names(params) == {"lora_a", "lora_b"}  # no base weight in the checkpoint
    adapter_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(params))
    opt_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(opt_state) if len(x.shape) > 0)
    assert opt_shapes == sorted(adapter_shapes * 2)  # adam mu and nu of the adapters only
    config = ocp.JsonCheckpointHandler().restore(step_dir / "config")
    assert config["base"]["init_from"] == str(gpt2) and len(config["base"]["fingerprint"]) == 64

    hf_out, peft_out = tmp_path / "hf", tmp_path / "peft"
    assert jaxformer_cli.main(["export", "--workdir", str(workdir), "--hf", str(hf_out), "--peft", str(peft_out)]) == 0
    weights = run_export.run_weights(workdir)
    tokenizer = tokenizer_store.load(workdir)
    rows = [tokenizer.encode(t) for t in TEXTS]
    ours = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, row in enumerate(rows):
        ours[i, : len(row)] = row
    valid = ours != 0
    mine = np.asarray(models.build(weights.config).apply({"params": weights.params}, jnp.asarray(ours), valid=valid))
    theirs, mask = torch.tensor(np.where(valid, ours - 3, 0)), torch.tensor(valid.astype(np.int64))
    merged = transformers.AutoModelForCausalLM.from_pretrained(hf_out).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(gpt2).eval()
    with torch.no_grad():
        untouched = base(theirs, attention_mask=mask).logits.numpy()
        adapted = peft.PeftModel.from_pretrained(base, peft_out).eval()(theirs, attention_mask=mask).logits.numpy()
        merged_logits = merged(theirs, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(merged_logits[valid], mine[..., 3:][valid], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(adapted[valid], mine[..., 3:][valid], atol=1e-5, rtol=1e-5)
    assert np.abs(untouched - adapted)[valid].max() > 1e-2  # the adapters changed the model


@pytest.mark.parametrize(
    "train_modules, hf_modules",  # jaxformer's top-level modules -> the Hugging Face module names peft wraps
    [
        pytest.param(["classifier"], ["classifier"], marks=pytest.mark.slow),
        pytest.param(["classifier", "pooler"], ["bert.pooler.dense", "classifier"], marks=pytest.mark.slow),
    ],
    ids=["classifier", "classifier+pooler"],  # the second is experiments/finetune_minilm_classify_lora.py's
)
def test_classifier_lora_run_exports_its_trained_head_for_peft(tmp_path, train_modules, hf_modules):
    """A LoRA classifier run (new head trained in full, lora.train_modules) -> `export --peft`: the directory
    lists the head in modules_to_save, and peft on a freshly headed base gives the merged export's logits."""
    import peft
    import torch
    import transformers

    bert = tiny_bert(tmp_path / "bert")
    lines = corpus(160, seed=3)
    labelled = [f"{line}\t{0 if 'king' in line.split() else 1 if 'queen' in line.split() else 2}" for line in lines]
    (tmp_path / "labels.tsv").write_text("\n".join(labelled) + "\n", encoding="utf-8")
    settings = {
        **lm_settings(str(bert), tmp_path / "labels.tsv", steps=4),
        "data.source": "tsv",
        "data.task": "classification",
        "data.num_classes": 3,
        "data.max_length": 16,
        "train.learning_rate": 0.01,
        "lora.rank": 2,
        "lora.targets": ["query", "value"],
        "lora.train_modules": train_modules,
    }
    del settings["data.text_unit"]
    workdir = tmp_path / "run"
    train_in_process(write_experiment(tmp_path / "cls.py", settings), workdir)
    hf_out, peft_out = tmp_path / "hf", tmp_path / "peft"
    assert jaxformer_cli.main(["export", "--workdir", str(workdir), "--hf", str(hf_out), "--peft", str(peft_out)]) == 0
    assert json.loads((peft_out / "adapter_config.json").read_text())["modules_to_save"] == hf_modules

    hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bert / "tokenizer.json"))
    encoded = [hf_tokenizer(t)["input_ids"] for t in TEXTS]
    ids = np.zeros((len(encoded), max(map(len, encoded))), np.int64)
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = row
    mask = torch.tensor((ids != 0).astype(np.int64))
    cls = transformers.BertForSequenceClassification
    with torch.no_grad():
        merged = cls.from_pretrained(hf_out).eval()(torch.tensor(ids), attention_mask=mask).logits.numpy()
        fresh = cls.from_pretrained(bert, num_labels=3).eval()  # the base with a new, untrained head
        untouched = fresh(torch.tensor(ids), attention_mask=mask).logits.numpy()
        adapted = peft.PeftModel.from_pretrained(fresh, peft_out).eval()(torch.tensor(ids), attention_mask=mask)
    np.testing.assert_allclose(adapted.logits.numpy(), merged, atol=1e-5, rtol=1e-5)
    assert np.abs(untouched - merged).max() > 1e-2  # the saved head, not the base's fresh one, gave these


def run_devices(experiment: Path, workdir: Path, devices: int, *overrides: str) -> subprocess.Popen:
    args = ["-m", "jaxformer.cli", "train", "--config", str(experiment), "--workdir", str(workdir), *LORA, *overrides]
    return launch(args, devices)


@pytest.mark.slow  # three subprocesses, two of them with 2 fake devices (about 3 minutes on 2 CPU cores)
def test_lora_under_pmap_and_an_fsdp_mesh_logs_the_single_device_losses(setup, tmp_path):
    _, _, experiment = setup
    short = (  # no dropout: pmap draws its masks per device, so only the deterministic function is comparable
        "--config.train.steps=6",
        "--config.checkpoint.every=6",
        "--config.model.dropout_rate=0.0",
        "--config.model.attention_dropout_rate=0.0",
    )
    runs = {
        "single": run_devices(experiment, tmp_path / "single", 1, *short),
        "pmap": run_devices(experiment, tmp_path / "pmap", 2, *short, "--config.parallelism=pmap"),
        "fsdp": run_devices(experiment, tmp_path / "fsdp", 2, *short, "--config.mesh.fsdp=2", "--config.mesh.data=1"),
    }
    for name, process in runs.items():
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {err[-3000:]}"
    want = losses(tmp_path / "single")
    assert len(want) == 6
    for name in ("pmap", "fsdp"):
        np.testing.assert_allclose(losses(tmp_path / name), want, rtol=1e-5, err_msg=name)


@pytest.mark.slow  # three subprocess runs of 40 steps (about 2.5 minutes on 2 CPU cores)
def test_lora_sigkill_then_resume_is_bit_identical(setup, tmp_path):
    _, _, experiment = setup
    overrides = (*LORA, "--config.train.steps=40", "--config.checkpoint.every=10")
    reference = launch(  # the same XLA flags as the killed and resumed runs
        [
            "-m",
            "jaxformer.cli",
            "train",
            "--config",
            str(experiment),
            "--workdir",
            str(tmp_path / "reference"),
            *overrides,
        ],
        1,
    )
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]

    workdir = tmp_path / "killed"
    proc = launch(
        ["-m", "jaxformer.cli", "train", "--config", str(experiment), "--workdir", str(workdir), *overrides], 1
    )
    kill_after_checkpoint(proc, workdir, step=10, last_step=40, timeout=300)

    resumed = launch(
        ["-m", "jaxformer.cli", "train", "--config", str(experiment), "--workdir", str(workdir), *overrides], 1
    )
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "Resumed from checkpoint step" in out
    assert_bit_identical(tmp_path / "reference", workdir)
