"""`labelled_blocks`: headed paragraphs -> (text, label) records, top-k labels, a block split.

The test writes a small play whose speakers, speech counts and block positions it knows, and
checks each record, the label order and that validation records come only from validation blocks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxformer.data import build_pipeline
from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError
from jaxformer.data.labelled_blocks import build_labelled_blocks, headed_paragraphs

HEADER = r"([A-Z][A-Za-z ]*):"


def play(speakers: list[str]) -> str:
    """One two-line speech per entry of `speakers`; speech i says 'line i a' / 'line i b' (i in 3 digits)."""
    return "".join(f"{name}:\nline {i:03d} a,\nline {i:03d} b.\n\n" for i, name in enumerate(speakers))


def test_paragraphs_give_name_and_joined_body() -> None:
    text = "ALICE:\nHello there,\n  friend.\n\nstage direction without header\n\nBob Smith:\nHi.\n\nEMPTY:\n\n"
    bob = text.index("Bob Smith:")
    assert headed_paragraphs(text, HEADER) == [(0, "ALICE", "Hello there, friend."), (bob, "Bob Smith", "Hi.")]


def test_labels_are_the_top_k_training_names_and_the_split_follows_blocks() -> None:
    # 100 speeches of equal length -> 10 blocks of 10 speeches; blocks 4 and 9 (every 5th) are validation.
    speakers = [["A", "A", "A", "B", "B", "C", "D", "A", "B", "E"][i % 10] for i in range(100)]
    text = play(speakers)
    blocks = build_labelled_blocks(text, HEADER, top_labels=3, num_blocks=10, eval_every=5)
    assert blocks.labels == ("A", "B", "C")  # 40, 30, then C and D tie at 10 -> by name
    size = len(text) / 10
    offsets = [o for o, _, _ in headed_paragraphs(text, HEADER)]
    expected: dict[str, list[tuple[str, int]]] = {"train": [], "validation": []}
    for i, (name, offset) in enumerate(zip(speakers, offsets, strict=True)):
        block = int(offset / size)
        if name in blocks.labels:
            split = "validation" if block in (4, 9) else "train"
            expected[split].append((f"line {i:03d} a, line {i:03d} b.", blocks.labels.index(name)))
    assert blocks.train == expected["train"] and blocks.validation == expected["validation"]
    assert [int(t[5:8]) for t, _ in blocks.validation] == [  # speeches 40-49 and 90-99 without D and E
        i for i in [*range(40, 50), *range(90, 100)] if speakers[i] in "ABC"
    ]
    train_texts = {t for t, _ in blocks.train}
    assert not train_texts & {t for t, _ in blocks.validation}
    assert blocks.majority_accuracy() == pytest.approx(8 / 16)  # A: 4 of the 8 kept per block


def test_split_is_deterministic_and_blocks_are_disjoint_in_the_text() -> None:
    text = play([f"SP{i % 7}" for i in range(211)])
    a = build_labelled_blocks(text, r"([A-Z0-9]+):", 0, 13, 4)
    b = build_labelled_blocks(text, r"([A-Z0-9]+):", 0, 13, 4)
    assert a == b
    speeches = [play([f"SP{i % 7}"]).replace("000", f"{i:03d}") for i in range(211)]
    assert "".join(speeches) == text
    starts = [sum(len(s) for s in speeches[:i]) for i in range(211)]  # each header's offset
    block = {i: int(starts[i] / (len(text) / 13)) for i in range(211)}
    assert sorted(int(t[5:8]) for t, _ in a.validation) == [i for i in range(211) if block[i] % 4 == 3]
    assert sorted(int(t[5:8]) for t, _ in a.train) == [i for i in range(211) if block[i] % 4 != 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"header": "(", "top_labels": 0}, "not a valid regular expression"),
        ({"header": r"(NOBODY):", "top_labels": 0}, "no paragraph starts with a line matching"),
        ({"header": HEADER, "top_labels": 9}, "fewer than top_labels=9"),
    ],
)
def test_bad_settings_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        build_labelled_blocks(play(["A", "B"] * 20), num_blocks=4, eval_every=2, **kwargs)
    assert "\n" not in str(info.value)


def test_pipeline_source_labelled_blocks(tmp_path: Path) -> None:
    speakers = [["A", "B", "C", "A"][i % 4] for i in range(80)]
    path = tmp_path / "play.txt"
    path.write_text(play(speakers), encoding="utf-8")
    config = DataConfig(
        source="labelled_blocks",
        task="classification",
        train_path=str(path),
        header_pattern=HEADER,
        top_labels=2,
        num_blocks=8,
        eval_block_every=4,
        tokenizer="char",
        max_length=40,
        prefetch=0,
    )
    pipeline = build_pipeline(config, family="encoder_only", batch_size=4, seed=0)
    blocks = build_labelled_blocks(path.read_text(), HEADER, 2, 8, 4)
    assert pipeline.num_classes == 2
    assert pipeline.stats["train"]["records"] == len(blocks.train)
    batch = next(pipeline.eval_batches())
    tok = pipeline.tokenizer
    for row in range(4):
        text, label = blocks.validation[row]
        assert batch["tokens"][row].tolist()[: len(text) + 2] == [1, *tok.encode(text), 2]
        assert batch["labels"][row] == label
    with pytest.raises(DataError, match="eval_block_every=9 exceeds num_blocks=8"):
        config.replace(eval_block_every=9)
