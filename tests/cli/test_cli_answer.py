"""`jaxformer answer` / `classify` / `tag` and their Python API on tiny random `transformers` BERT heads.

Each model is saved by `transformers` next to a real WordPiece tokenizer.json built here with the
`tokenizers` library; the answers, labels and logits are checked against transformers' own model
run on the same token ids.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.wordpiece import VOCAB, write_tokenizer
from tokenizers import Tokenizer

from jaxformer import cli, encoder_tasks, inference
from jaxformer.decoding.spans import best_spans, context_mask

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QUESTION = "Where is the capital of France?"
CONTEXT = "Paris is the capital of France. The old city lies on the Seine, a large river."
TAGS = {0: "O", 1: "B-LOC", 2: "I-LOC"}
CLASSES = {0: "negative", 1: "positive", 2: "mixed"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (directory, torch model, tokenizer) for "qa", "tag", "classify"."""
    root = tmp_path_factory.mktemp("cli_answer")
    size = len(VOCAB)
    config = dict(vocab_size=size, hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=23)
    config.update(max_position_embeddings=64, initializer_range=0.3, pad_token_id=0)
    torch.manual_seed(0)
    made = {
        "qa": transformers.BertForQuestionAnswering(transformers.BertConfig(**config)),
        "tag": transformers.BertForTokenClassification(
            transformers.BertConfig(**config, id2label=TAGS, label2id={v: k for k, v in TAGS.items()})
        ),
        "classify": transformers.BertForSequenceClassification(
            transformers.BertConfig(**config, id2label=CLASSES, label2id={v: k for k, v in CLASSES.items()})
        ),
    }
    out = {}
    for name, model in made.items():
        model.eval().save_pretrained(root / name)
        out[name] = (root / name, model, write_tokenizer(root / name))
    return out


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def torch_outputs(model, encoding):
    with torch.no_grad():
        return model(
            torch.tensor([encoding.ids]),
            token_type_ids=torch.tensor([encoding.type_ids]),
            attention_mask=torch.ones(1, len(encoding.ids), dtype=torch.int64),
        )


def test_answer_matches_transformers_and_the_cli_prints_the_api_span(tiny, capsys):
    directory, model, tokenizer = tiny["qa"]
    answers = encoder_tasks.answer(str(directory), QUESTION, CONTEXT, max_answer_length=6, top_k=4)
    assert len(answers) == 4
    encoding = tokenizer.encode(QUESTION, CONTEXT)
    expected = torch_outputs(model, encoding)
    run = inference.load_model(directory)
    ours = encoder_tasks.encoder_outputs(run, encoder_tasks.qa_windows(run, QUESTION, CONTEXT)[1])
    width = len(encoding.ids)
    for key in ("start_logits", "end_logits"):
        np.testing.assert_allclose(ours[key][0, :width], getattr(expected, key)[0].numpy(), atol=1e-5)
    reference = best_spans(
        expected.start_logits[0].numpy(),
        expected.end_logits[0].numpy(),
        context_mask(encoding.sequence_ids),
        max_answer_length=6,
        top_k=4,
    )
    assert [(a.start_token, a.end_token) for a in answers] == [(s.start, s.end) for s in reference]
    for found in answers:  # characters from the offsets of the span's first and last tokens
        assert encoding.sequence_ids[found.start_token] == encoding.sequence_ids[found.end_token] == 1
        assert found.text == CONTEXT[encoding.offsets[found.start_token][0] : encoding.offsets[found.end_token][1]]
        assert found.text and found.end_token - found.start_token < 6
    code, out, err = run_cli(
        capsys, "answer", "--model", str(directory), "--question", QUESTION, "--context", CONTEXT,
        "--max_answer_length", "6",
    )  # fmt: skip
    assert (code, out, err) == (0, answers[0].text + "\n", "")
    code, out, _ = run_cli(
        capsys, "answer", "--model", str(directory), "--question", QUESTION, "--context", CONTEXT,
        "--max_answer_length", "6", "--top_k", "4", "--json",
    )  # fmt: skip
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(p["text"], p["start"], p["end"], p["start_token"]) for p in printed] == [
        (a.text, a.start, a.end, a.start_token) for a in answers
    ]


def test_answer_bad_inputs_are_one_line_exit_2(tiny, capsys):
    qa, tagger = str(tiny["qa"][0]), str(tiny["tag"][0])
    cases = {
        "question-answering head (encoder_head='qa')": ["--model", tagger, "--question", "q?", "--context", "Paris."],
        "the context is empty": ["--model", qa, "--question", "q?", "--context", "  "],
        "max_answer_length=0 must be": ["--model", qa, "--question", "q?", "--context", "Paris.", "--max_answer_length", "0"],
        "the question is empty": ["--model", qa, "--question", "", "--context", "Paris."],
    }  # fmt: skip
    for expected, args in cases.items():
        code, out, err = run_cli(capsys, "answer", *args)
        assert code == 2 and out == "" and err.count("\n") == 1 and expected in err, (expected, err)
    code, _, err = run_cli(capsys, "classify", "--model", qa, "--text", "paris")
    assert code == 2 and "sequence-classification head" in err and err.count("\n") == 1


def test_classify_prints_the_checkpoint_label_names(tiny, capsys):
    directory, model, tokenizer = tiny["classify"]
    texts = ["paris is old", "the seine flows through the city"]
    results = encoder_tasks.classify_labels(str(directory), texts)
    for text, result in zip(texts, results, strict=True):
        probs = torch.softmax(torch_outputs(model, tokenizer.encode(text)).logits[0], -1).numpy()
        assert result["label"] == CLASSES[int(probs.argmax())]
        np.testing.assert_allclose([result["probabilities"][CLASSES[i]] for i in range(3)], probs, atol=1e-5)
    code, out, _ = run_cli(capsys, "classify", "--model", str(directory), "--text", texts[0], "--text", texts[1])
    assert code == 0
    assert out == "".join(f"{r['label']}\t{r['probabilities'][r['label']]:.4f}\n" for r in results)


def test_tag_labels_each_word_by_its_first_token(tiny, capsys):
    directory, model, tokenizer = tiny["tag"]
    text = "Paris lies on the Seine, capitals of France."
    words = encoder_tasks.tag(str(directory), text)
    encoding = tokenizer.encode(text)
    logits = torch_outputs(model, encoding).logits[0].numpy()
    first = {}
    for index, word in enumerate(encoding.word_ids):
        if word is not None and word not in first:
            first[word] = index
    assert [w["word"] for w in words] == ["Paris", "lies", "on", "the", "Seine", ",", "capitals", "of", "France", "."]
    assert [w["label"] for w in words] == [TAGS[int(logits[i].argmax())] for i in first.values()]
    code, out, _ = run_cli(capsys, "tag", "--model", str(directory), "--text", text)
    assert code == 0 and out == " ".join(f"{w['word']}/{w['label']}" for w in words) + "\n"


def test_a_long_context_is_read_in_overlapping_windows(tiny, capsys):
    """Windows of 24 tokens sharing 8: every window's spans, ranked together by score, as run_qa does."""
    directory, model, tokenizer = tiny["qa"]
    context = " ".join([CONTEXT, "What flows through it? The river Seine.", CONTEXT.lower(), "It is old and large."])
    answers = encoder_tasks.answer(str(directory), QUESTION, context, 5, top_k=6, max_seq_len=24, doc_stride=8)
    cutter = Tokenizer.from_str(tokenizer.to_str())
    cutter.enable_truncation(24, stride=8, strategy="only_second")
    first = cutter.encode(QUESTION, context)
    windows = [first, *first.overflowing]
    assert len(windows) >= 3 and all(len(w.ids) <= 24 for w in windows)
    candidates = []
    for index, window in enumerate(windows):
        logits = torch_outputs(model, window)
        for span in best_spans(
            logits.start_logits[0].numpy(), logits.end_logits[0].numpy(), context_mask(window.sequence_ids), 5, 6
        ):
            chars = (window.offsets[span.start][0], window.offsets[span.end][1])
            candidates.append((-span.score, index, chars))
    expected, seen = [], set()
    for _, index, chars in sorted(candidates, key=lambda c: (c[0], c[1])):
        if chars not in seen:
            seen.add(chars)
            expected.append((index, chars))
    assert [(a.window, (a.start, a.end)) for a in answers] == expected[:6]
    assert len({a.window for a in answers}) > 1  # the ranking mixes windows
    assert all(a.text == context[a.start : a.end] for a in answers)
    code, out, _ = run_cli(
        capsys, "answer", "--model", str(directory), "--question", QUESTION, "--context", context,
        "--max_answer_length", "5", "--max_seq_len", "24", "--doc_stride", "8",
    )  # fmt: skip
    assert (code, out) == (0, answers[0].text + "\n")
    code, _, err = run_cli(
        capsys, "answer", "--model", str(directory), "--question", QUESTION * 3, "--context", context,
        "--max_seq_len", "24",
    )  # fmt: skip
    assert code == 2 and "cannot cut the context into windows" in err and err.count("\n") == 1
