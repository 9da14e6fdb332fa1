"""data.task="qa" / "token_classification" through `jaxformer train` from a tiny `transformers` BERT.

- QA: a few steps on SQuAD-style JSONL, loss finite and going down; the exported HF checkpoint in
  `transformers` gives the run's own start/end logits on the same features (so the run's token ids
  are the tokenizer.json's ids, shifted as the run's embedding rows are); `jaxformer answer` on the
  export prints `encoder_tasks.answer`'s span.
- Token classification: label names from the training split reach the export's id2label;
  `jaxformer tag` on the export prints `encoder_tasks.tag`'s tags.
- Bad input: a qa run without a HF tokenizer, a malformed JSONL record: one line, exit 2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from support.finetune_models import losses, write_experiment
from support.wordpiece import VOCAB, WORDS, write_tokenizer

from jaxformer import cli as jaxformer_cli
from jaxformer import encoder_tasks, models
from jaxformer.data import tokenizer_store
from jaxformer.data.config import DataConfig
from jaxformer.data.task_sources import TaskPipeline
from jaxformer.hf import run_export

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TAGS = ("O", "LOC", "ACT")
PLACES = {"paris", "france", "seine", "city", "river"}
ACTIONS = {"lies", "flows", "is"}


def tiny_bert(directory: Path, head: str, num_labels: int = 2) -> Path:
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=20,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    cls = transformers.BertForQuestionAnswering if head == "qa" else transformers.BertForTokenClassification
    cls(config).eval().save_pretrained(directory)
    write_tokenizer(directory)
    return directory


def qa_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
        answer = rng.choice(sorted(PLACES))
        words.insert(rng.randint(0, len(words)), answer)
        context = " ".join(words)
        start = context.index(f" {answer} ") + 1 if f" {answer} " in context else context.index(answer)
        out.append(
            {
                "question": "where is the city",
                "context": context,
                "answers": {"text": [answer], "answer_start": [start]},
            }
        )
    return out


def tagged_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        tags = ["LOC" if w in PLACES else "ACT" if w in ACTIONS else "O" for w in words]
        out.append({"tokens": words, "tags": tags})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def settings(init_from: str, task: str, train: Path, valid: Path, steps: int = 10) -> dict:
    return {
        "model.init_from": init_from,
        "data.source": "jsonl",
        "data.task": task,
        "data.train_path": str(train),
        "data.eval_path": str(valid),
        "data.max_length": 32,
        "data.doc_stride": 8,
        "train.steps": steps,
        "train.batch_size": 4,
        "train.learning_rate": 1e-2,
        "train.warmup_steps": 0,
        "train.schedule": "constant",
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.num_samples": 0,
        "train.progress": False,
        "checkpoint.every": steps,
    }


def main(*args: str) -> int:
    return jaxformer_cli.main([*args])


def test_qa_train_export_answer(tmp_path, capsys):
    bert = tiny_bert(tmp_path / "bert_qa", "qa")
    train = write_jsonl(tmp_path / "train.jsonl", qa_records(16, seed=1))
    valid = write_jsonl(tmp_path / "valid.jsonl", qa_records(5, seed=2))
    experiment = write_experiment(tmp_path / "qa.py", settings(str(bert), "qa", train, valid))
    workdir, export = tmp_path / "run", tmp_path / "export"
    assert main("train", "--config", str(experiment), "--workdir", str(workdir)) == 0
    logged = losses(workdir)
    assert len(logged) == 10 and np.all(np.isfinite(logged)), logged
    assert np.mean(logged[-3:]) < np.mean(logged[:3]), logged
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert any("eval_accuracy" in r for r in rows)  # start/end accuracy of the validation windows
    assert main("export", "--workdir", str(workdir), "--hf", str(export)) == 0
    assert json.loads((export / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]

    # The run's features are the tokenizer.json's ids shifted as the run's rows: the export (rows in
    # the checkpoint's order) in transformers gives the run's logits on the unshifted ids.
    tokenizer = tokenizer_store.load(workdir)
    exp_data = {"task": "qa", "train_path": str(train), "eval_path": str(valid), "max_length": 32, "doc_stride": 8}
    data = DataConfig(source="jsonl", tokenizer="hf", tokenizer_path=str(bert / "tokenizer.json"), **exp_data)
    batch = next(TaskPipeline(data, batch_size=5, seed=0, tokenizer=tokenizer).eval_batches())
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bert / "tokenizer.json"))
    first = json.loads(valid.read_text().splitlines()[0])
    hf_ids = reference(first["question"], first["context"], truncation="only_second", max_length=32)["input_ids"]
    shifted = {0: 0, 2: 1, 3: 2}  # [PAD], [CLS], [SEP] -> pad/bos/eos; the others +3
    expected = [shifted.get(i, i + 3) for i in hf_ids]
    assert batch["tokens"][0, : len(expected)].tolist() == expected
    assert (batch["tokens"][0, len(expected) :] == 0).all()
    weights = run_export.run_weights(workdir)
    tokens = jnp.asarray(batch["tokens"])
    out = models.build(weights.config).apply(
        {"params": weights.params}, tokens, token_type_ids=jnp.asarray(batch["token_type_ids"]), valid=tokens != 0
    )
    valid_mask = batch["tokens"] != 0
    ids = batch["tokens"]
    unshifted = np.where(ids > 2, ids - 3, np.array([0, 2, 3])[np.minimum(ids, 2)])  # back to tokenizer.json ids
    hf = transformers.BertForQuestionAnswering.from_pretrained(export).eval()
    with torch.no_grad():
        theirs = hf(
            input_ids=torch.tensor(unshifted, dtype=torch.long),
            token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long),
            attention_mask=torch.tensor(valid_mask.astype(np.int64)),
        )
    for name in ("start_logits", "end_logits"):
        mine = np.asarray(out[name])[valid_mask]
        np.testing.assert_allclose(mine, getattr(theirs, name).numpy()[valid_mask], atol=1e-4, rtol=1e-4)

    question, context = first["question"], first["context"]
    capsys.readouterr()
    assert main("answer", "--model", str(export), "--question", question, "--context", context) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == encoder_tasks.answer(str(export), question, context)[0].text


@pytest.mark.slow  # ~12 s; the QA run beside it takes the same train-export-answer path by default
def test_token_classification_train_export_tag(tmp_path, capsys):
    bert = tiny_bert(tmp_path / "bert_tc", "token_classification", num_labels=2)  # the run has 3: a new head
    train = write_jsonl(tmp_path / "train.jsonl", tagged_records(16, seed=3))
    valid = write_jsonl(tmp_path / "valid.jsonl", tagged_records(5, seed=4))
    experiment = write_experiment(tmp_path / "tc.py", settings(str(bert), "token_classification", train, valid))
    workdir, export = tmp_path / "run", tmp_path / "export"
    assert main("train", "--config", str(experiment), "--workdir", str(workdir)) == 0
    logged = losses(workdir)
    assert len(logged) == 10 and np.all(np.isfinite(logged)), logged
    assert np.mean(logged[-3:]) < np.mean(logged[:3]), logged
    assert json.loads((workdir / "labels.json").read_text()) == sorted(TAGS)
    assert main("export", "--workdir", str(workdir), "--hf", str(export)) == 0
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"] == {str(i): name for i, name in enumerate(sorted(TAGS))}
    text = "paris lies on the seine"
    capsys.readouterr()
    assert main("tag", "--model", str(export), "--text", text, "--json") == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(encoder_tasks.tag(str(export), text)))
    assert {w["label"] for w in printed} <= set(TAGS)


def test_qa_without_hf_tokenizer_is_one_line(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", qa_records(4, seed=1))
    values = settings("", "qa", train, train, steps=2)
    values.pop("model.init_from")
    values.update({"model.preset": "tiny-bert", "model.encoder_head": "qa", "data.tokenizer": "char"})
    experiment = write_experiment(tmp_path / "bad.py", values)
    code = main("train", "--config", str(experiment), "--workdir", str(tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "tokenizer" in err and "init_from" in err


def test_malformed_jsonl_record_is_one_line(tmp_path, capsys):
    bert = tiny_bert(tmp_path / "bert_qa", "qa")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(qa_records(1, seed=1)[0]) + "\n" + '{"question": "where", "context": 3}\n')
    experiment = write_experiment(tmp_path / "bad.py", settings(str(bert), "qa", train, train, steps=2))
    capsys.readouterr()  # transformers' save_pretrained progress
    code = main("train", "--config", str(experiment), "--workdir", str(tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "line 2" in err and "answers" in err
