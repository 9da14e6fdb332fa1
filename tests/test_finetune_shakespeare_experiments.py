"""The cross-dataset LoRA experiments run through the CLI as a user would: pre-train (a few steps, a
narrow model), `jaxformer export --hf`, then LoRA from that directory. `train.eval_at_start` is checked
against an independent number: the imported model's step-0 validation loss must equal the pre-trained
run's own last validation loss on the same file (the LoRA update starts at zero). The real runs and
their numbers: benchmarks/results/finetune_shakespeare_multi30k_lora.json."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from support.train_runs import EXPERIMENTS, SMALL_MODEL, train

from jaxformer import cli, experiment

SHORT = (
    "--config.train.steps=2",
    "--config.train.batch_size=4",
    "--config.train.warmup_steps=1",
    "--config.train.eval_every=2",
    "--config.train.log_every=1",
    "--config.train.progress=False",
    "--config.checkpoint.every=2",
    "--config.data.max_length=33",
)


def captions(path: Path, n: int, offset: int) -> Path:
    path.write_text("".join(f"A dog number {offset + i} runs across the green field.\n" for i in range(n)))
    return path


def test_configs_build() -> None:
    pre = experiment.validate(experiment.load(EXPERIMENTS / "finetune_shakespeare_pretrain.py"))
    assert pre.data.tokenizer == "byte" and pre.init_from is None
    raw = experiment.load(EXPERIMENTS / "finetune_shakespeare_multi30k_lora.py")
    assert raw.data.tokenizer == "byte" and raw.data.text_unit == "line" and raw.train.eval_at_start
    assert raw.lora.rank == 8 and raw.data.train_path.endswith("train.en.gz")


@pytest.mark.slow
def test_pretrain_export_lora(tmp_path: Path) -> None:
    train_file, val_file = captions(tmp_path / "train.en", 200, 0), captions(tmp_path / "val.en", 40, 1000)
    data = (
        f"--config.data.train_path={train_file}",
        f"--config.data.eval_path={val_file}",
        "--config.data.text_unit=line",
        "--config.data.pack=True",
        "--config.train.eval_batches=0",
    )
    pre = train("finetune_shakespeare_pretrain.py", tmp_path / "pre", *SMALL_MODEL, *SHORT, *data)
    assert cli.main(["export", "--workdir", str(tmp_path / "pre"), "--hf", str(tmp_path / "hf")]) == 0
    run = train(
        "finetune_shakespeare_multi30k_lora.py",
        tmp_path / "lora",
        f"--config.model.init_from={tmp_path / 'hf'}",
        *SHORT,
        *data,
    )
    evals = run.eval_records()
    assert [r["step"] for r in evals] == [0, 2]
    assert evals[0]["eval_loss"] == pytest.approx(pre.eval_records()[-1]["eval_loss"], abs=1e-5)
    assert all(math.isfinite(r["loss"]) for r in run.train_records())


@pytest.mark.slow
def test_no_eval_at_start_by_default(tmp_path: Path) -> None:
    text = captions(tmp_path / "t.txt", 200, 0)
    run = train(
        "finetune_shakespeare_pretrain.py", tmp_path / "w", *SMALL_MODEL, *SHORT, f"--config.data.train_path={text}"
    )
    assert [r["step"] for r in run.eval_records()] == [2]


def parallel(prefix: Path, n: int, offset: int) -> Path:
    Path(f"{prefix}.en").write_text("".join(f"a dog {offset + i} runs.\n" for i in range(n)))
    Path(f"{prefix}.de").write_text("".join(f"ein hund {offset + i} rennt.\n" for i in range(n)))
    return prefix


@pytest.mark.slow
def test_seq2seq_from_workdir(tmp_path: Path) -> None:
    """finetune_multi30k_seq2seq.py continues a multi30k_transformer.py workdir: its tokenizer and weights,
    the step-0 validation loss equal to the source run's last one."""
    train_prefix, val_prefix = parallel(tmp_path / "train", 120, 0), parallel(tmp_path / "val", 20, 500)
    data = (
        f"--config.data.train_path={train_prefix}",
        f"--config.data.eval_path={val_prefix}",
        f"--config.data.test_path={val_prefix}",
        "--config.train.eval_batches=0",
        "--config.train.num_samples=0",
    )
    source = train(
        "multi30k_transformer.py",
        tmp_path / "src",
        *SMALL_MODEL,
        "--config.model.num_decoder_layers=1",
        "--config.data.tokenizer=char",
        *SHORT,
        *data,
    )
    run = train(
        "finetune_multi30k_seq2seq.py", tmp_path / "ft", f"--config.model.init_from={tmp_path / 'src'}", *SHORT, *data
    )
    evals = run.eval_records()
    assert [r["step"] for r in evals] == [0, 2]
    assert evals[0]["eval_loss"] == pytest.approx(source.eval_records()[-1]["eval_loss"], abs=1e-5)
