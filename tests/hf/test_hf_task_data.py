"""QA and tagging fine-tuning batches equal the run_qa / run_ner recipes on transformers' tokenizer."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.wordpiece import VOCAB, write_tokenizer

from jaxformer import hf, models
from jaxformer.config import TrainConfig
from jaxformer.data.errors import DataError
from jaxformer.hf.task_data import (
    QARecord,
    TaggedRecord,
    qa_features,
    read_conll_jsonl,
    read_squad_jsonl,
    tagging_features,
)
from jaxformer.train.optim import make_optimizer
from jaxformer.train.state import TrainState
from jaxformer.train.step import make_train_step

transformers = pytest.importorskip("transformers")

CONTEXT = "Paris is the capital of France. The old city lies on the Seine, a large river. It flows through Paris."
QUESTION = "Where is the capital?"


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """(tokenizers.Tokenizer, the same tokenizer.json as transformers' fast tokenizer)."""
    root = tmp_path_factory.mktemp("task_data")
    ours = write_tokenizer(root)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(root / "tokenizer.json"), pad_token="[PAD]")
    return ours, theirs


def run_qa_reference(tokenizer, records, max_seq_len, stride):
    """transformers' run_qa prepare_train_features, written out."""
    out = {"tokens": [], "types": [], "start": [], "end": []}
    for record in records:
        enc = tokenizer(
            record.question,
            record.context,
            truncation="only_second",
            max_length=max_seq_len,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
            padding="max_length",
        )
        for i, offsets in enumerate(enc["offset_mapping"]):
            out["tokens"].append(enc["input_ids"][i])
            out["types"].append(enc["token_type_ids"][i])
            sequence_ids = enc.sequence_ids(i)
            if record.answer_start is None:
                out["start"].append(0)
                out["end"].append(0)
                continue
            start_char, end_char = record.answer_start, record.answer_start + len(record.answer_text)
            token_start = 0
            while sequence_ids[token_start] != 1:
                token_start += 1
            token_end = len(enc["input_ids"][i]) - 1
            while sequence_ids[token_end] != 1:
                token_end -= 1
            if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
                out["start"].append(0)
                out["end"].append(0)
                continue
            while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                token_start += 1
            out["start"].append(token_start - 1)
            while offsets[token_end][1] >= end_char:
                token_end -= 1
            out["end"].append(token_end + 1)
    return {k: np.array(v) for k, v in out.items()}


def test_qa_features_equal_the_run_qa_recipe(tokenizers):
    ours, theirs = tokenizers
    records = [
        QARecord(QUESTION, CONTEXT, CONTEXT.index("Paris"), "Paris"),
        QARecord(QUESTION, CONTEXT, CONTEXT.index("the Seine"), "the Seine"),
        QARecord("What flows?", CONTEXT, CONTEXT.index("a large river"), "a large river"),
        QARecord("Is it?", CONTEXT, None),  # unanswerable: [CLS]
        QARecord("What?", "Paris.", 0, "Paris"),  # one window
    ]
    batch = qa_features(ours, records, max_seq_len=20, doc_stride=6)
    expected = run_qa_reference(theirs, records, 20, 6)
    np.testing.assert_array_equal(batch["tokens"], expected["tokens"])
    np.testing.assert_array_equal(batch["token_type_ids"], expected["types"])
    np.testing.assert_array_equal(batch["start_positions"], expected["start"])
    np.testing.assert_array_equal(batch["end_positions"], expected["end"])
    assert len(batch["weights"]) > len(records)  # long contexts gave several windows
    assert (batch["start_positions"] > 0).sum() >= 4  # answers found inside windows, not all [CLS]
    assert (batch["start_positions"] <= batch["end_positions"]).all()


def test_tagging_features_label_each_words_first_token(tokenizers):
    ours, theirs = tokenizers
    records = [
        TaggedRecord(("Paris", "lies", "on", "the", "Seine"), ("B-LOC", "O", "O", "O", "B-LOC")),
        TaggedRecord(("capitals", "of", "France", "."), ("O", "O", "B-LOC", "O")),
    ]
    labels = ["O", "B-LOC", "I-LOC"]
    batch = tagging_features(ours, records, labels, max_seq_len=12)
    for row, record in enumerate(records):  # run_ner's tokenize_and_align_labels (label_all_tokens=False)
        enc = theirs(list(record.tokens), is_split_into_words=True, padding="max_length", max_length=12)
        expected, previous = [], None
        for word in enc.word_ids():
            expected.append(-100 if word is None or word == previous else labels.index(record.tags[word]))
            previous = word
        np.testing.assert_array_equal(batch["tokens"][row], enc["input_ids"])
        np.testing.assert_array_equal(batch["labels"][row], expected)
    assert (batch["weights"] == (batch["labels"] >= 0)).all()
    assert int(batch["weights"][1].sum()) == 4 and (batch["labels"][1] >= 0).sum() < (batch["tokens"][1] > 0).sum()


def test_jsonl_readers_and_their_one_line_errors(tmp_path):
    squad = tmp_path / "squad.jsonl"
    rows = [
        {"question": QUESTION, "context": CONTEXT, "answers": {"text": ["Paris"], "answer_start": [0]}},
        {"question": "Is it?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}},
    ]
    squad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_squad_jsonl(squad) == [QARecord(QUESTION, CONTEXT, 0, "Paris"), QARecord("Is it?", CONTEXT, None)]
    conll = tmp_path / "conll.jsonl"
    conll.write_text(json.dumps({"tokens": ["Paris", "lies"], "tags": ["B-LOC", "O"]}) + "\n")
    assert read_conll_jsonl(conll) == [TaggedRecord(("Paris", "lies"), ("B-LOC", "O"))]
    bad = tmp_path / "bad.jsonl"
    cases = {
        json.dumps({**rows[0], "answers": {"text": ["Lyon"], "answer_start": [0]}}): "is not at character 0",
        json.dumps({"question": "q"}): "lacks keys ['context', 'answers']",
    }
    for line, message in cases.items():
        bad.write_text(line + "\n")
        with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_squad_jsonl(bad)
    bad.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match="2 tokens but 1 tags"):
        read_conll_jsonl(bad)


@pytest.mark.slow  # compiles a train step (~15 s on a free core)
def test_fine_tuning_a_plain_bert_on_qa_features_lowers_the_loss(tokenizers, tmp_path):
    """BertModel -> finetune_init(encoder_head="qa") -> qa_features -> train steps: the whole hook chain."""
    torch = pytest.importorskip("torch")
    ours, _ = tokenizers
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=20, num_hidden_layers=1, num_attention_heads=4, intermediate_size=23
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "base")
    model_config, params = hf.finetune_init(tmp_path / "base", encoder_head="qa")
    records = [
        QARecord(QUESTION, CONTEXT, CONTEXT.index("Paris"), "Paris"),
        QARecord("What flows?", CONTEXT, CONTEXT.index("a large river"), "a large river"),
    ]
    batch = jax.tree.map(jnp.asarray, qa_features(ours, records, max_seq_len=24, doc_stride=8))
    train = TrainConfig(steps=15, batch_size=4, learning_rate=3e-3, warmup_steps=0, schedule="constant")
    tx, schedule = make_optimizer(train, model_config.d_model)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(models.build(model_config), model_config, tx, schedule))
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.7 * losses[0] and all(b < a for a, b in itertools.pairwise(losses)), losses
