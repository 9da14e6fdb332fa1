"""experiments/finetune_shakespeare_multi30k_instruct.py: its instruction writer and the run's data agree.

The writer turns Multi30k pairs into `messages` records; read back through the run's own data settings,
every row's weight is 1 exactly on the German caption's bytes, the newline the chat template puts after
it and the eos (the expectation is spelled out here from the text, not from `jaxformer.data.instruct`),
and 0 on the prompt and padding. A pair too long for one row is not written; a missing JSONL stops with
a line naming the command that writes it. The real run: benchmarks/results/finetune_shakespeare_multi30k_instruct.json.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from support.train_runs import EXPERIMENTS

from jaxformer import experiment
from jaxformer.data import build_pipeline
from jaxformer.data.errors import DataFileNotFoundError

FILE = EXPERIMENTS / "finetune_shakespeare_multi30k_instruct.py"
PAIRS = [
    ("A dog runs.", "Ein Hund rennt."),
    ("Two men sit on a bench.", "Zwei Männer sitzen auf einer Bank."),
    ("A girl in a red coat.", "Ein Mädchen in einem roten Mantel."),
    ("A man " + "very " * 30 + "tall.", "Ein sehr großer Mann."),  # 129+ bytes: not written
]


def writer():
    spec = importlib.util.spec_from_file_location("finetune_instruct_writer", FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_multi30k(directory: Path) -> Path:
    directory.mkdir()
    for split in ("train", "val"):
        for side, column in (("en", 0), ("de", 1)):
            text = "".join(pair[column] + "\n" for pair in PAIRS)
            (directory / f"{split}.{side}.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    return directory


def data_config(jsonl_dir: Path):
    data = experiment.validate(experiment.load(FILE)).data
    return dataclasses.replace(
        data, train_path=str(jsonl_dir / "train.jsonl"), eval_path=str(jsonl_dir / "val.jsonl"), shuffle=False
    )


def expected_piece(english: str, german: str) -> tuple[list[int], list[float]]:
    """bos + bytes of the rendered conversation + eos, and the weight of each target (piece[1:])."""
    prompt = f"Q: Translate to German: {english}\nA: ".encode()
    answer = f"{german}\n".encode()
    piece = [1] + [b + 3 for b in prompt + answer] + [2]
    weights = [0.0] * (len(prompt) - 1 + 1) + [1.0] * (len(answer) + 1)  # targets: prompt[1:], answer, eos
    return piece, weights


def test_config_builds() -> None:
    exp = experiment.validate(experiment.load(FILE))
    assert exp.data.source == "instruct" and exp.data.tokenizer == "byte" and exp.train.eval_at_start
    assert Path(str(exp.data.chat_template_path)).is_file() and exp.lora is None  # full fine-tuning
    assert "finetune_shakespeare_multi30k_instruct.py" in exp.data.missing_files_hint


def test_written_records_train_exactly_the_german(tmp_path: Path) -> None:
    counts = writer().make_instructions(tmp_path / "out", fake_multi30k(tmp_path / "m30k"))
    assert counts == {"train": (3, 4), "val": (3, 4)}
    records = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text("utf-8").splitlines()]
    assert [r["messages"][1]["content"] for r in records] == [de for _, de in PAIRS[:3]]
    pipeline = build_pipeline(data_config(tmp_path / "out"), family="decoder_only", batch_size=3, seed=0)
    batch = next(pipeline.train_batches())
    for row, (english, german) in enumerate(PAIRS[:3]):
        piece, weights = expected_piece(english, german)
        n = len(piece) - 1
        assert batch["tokens"][row, :n].tolist() == piece[:-1]
        assert batch["targets"][row, :n].tolist() == piece[1:]
        assert batch["weights"][row, :n].tolist() == weights
        assert not np.any(batch["weights"][row, n:]), "padding has weight 0"


def test_missing_jsonl_names_the_writer(tmp_path: Path) -> None:
    with pytest.raises(DataFileNotFoundError, match=r"Make it with: python .*finetune_shakespeare_multi30k_instruct"):
        build_pipeline(data_config(tmp_path / "absent"), family="decoder_only", batch_size=2, seed=0)
