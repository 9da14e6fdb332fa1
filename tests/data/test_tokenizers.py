"""Tokenizers: exact SentencePiece round trip on Multi30k, caching, reserved ids, char/byte/digits, tokenizer.json."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from jaxformer.data import DataConfig, DataError, tokenizer_factory
from jaxformer.data.tokenizers import ByteTokenizer, CharTokenizer, DigitsTokenizer, HFTokenizer

EDGE_CASES = ["", " leading", "trailing  ", "two  spaces", "\ttab", "Ünïcödé — “quotes” 😀 中文", "x" * 300]


def multi30k_lines(shared_data: Path, split: str, n: int) -> list[str]:
    lines = []
    for lang in ("en", "de"):
        with gzip.open(shared_data / "multi30k" / f"{split}.{lang}.gz", "rt", encoding="utf-8") as file:
            lines += file.read().splitlines()[:n]
    return lines


def test_sentencepiece_round_trips_multi30k_exactly(shared_data: Path, tmp_path: Path):
    train = multi30k_lines(shared_data, "train", 3000)
    config = DataConfig(source="text", task="lm", train_path="unused", tokenizer="sentencepiece", vocab_size=1000)
    tokenizer = tokenizer_factory.build_tokenizer(config, lambda: train, str(tmp_path))
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2) and tokenizer.vocab_size == 1000
    held_out = multi30k_lines(shared_data, "val", 1014)  # unseen sentences, possibly unseen characters
    texts = train + held_out + EDGE_CASES
    encoded = tokenizer.encode_batch(texts)
    mismatches = [t for t, ids in zip(texts, encoded, strict=True) if tokenizer.decode(ids) != t]
    assert not mismatches, mismatches[:3]
    assert all(0 not in ids and 1 not in ids and 2 not in ids for ids in encoded)
    assert sum(map(len, encoded[:6000])) < 0.4 * sum(map(len, train))  # it compresses (< 0.4 pieces per char)
    assert tokenizer.decode([1, *tokenizer.encode("A dog runs."), 2, 57, 0]) == "A dog runs."


def test_sentencepiece_model_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    texts = ["a man rides a horse", "zwei Hunde spielen im Schnee", "the sun is shining"] * 50
    config = DataConfig(source="text", task="lm", train_path="unused", tokenizer="sentencepiece", vocab_size=320)
    first = tokenizer_factory.build_tokenizer(config, lambda: texts, str(tmp_path))
    (model_file,) = (tmp_path / "tokenizer").glob("*.model")

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(tokenizer_factory, "train_sentencepiece", fail)
    second = tokenizer_factory.build_tokenizer(config, lambda: texts, str(tmp_path))
    assert second.encode("a horse") == first.encode("a horse") and second.model_file == str(model_file)
    # A different training text (another file) gets its own model.
    other = config.replace(train_path="other")
    assert tokenizer_factory.sentencepiece_file(other, str(tmp_path)) != model_file


@pytest.mark.parametrize("tokenizer", [CharTokenizer("abc é\n"), ByteTokenizer()], ids=["char", "byte"])
def test_char_and_byte_round_trip_and_reserved_ids(tokenizer):
    text = "abc é\nba"
    ids = tokenizer.encode(text)
    assert min(ids) >= 3 and tokenizer.decode(ids) == text
    assert tokenizer.decode([1, *ids, 2, *ids]) == text  # stops at eos, drops bos
    assert tokenizer.decode([0, *ids, 0]) == text


def test_char_unknown_and_digits():
    char = CharTokenizer("ab")
    assert char.encode("abz") == [4, 5, 3] and char.decode(char.encode("abz")) == "ab\ufffd"
    digits = DigitsTokenizer()
    assert digits.encode("0912") == [3, 12, 4, 5] and digits.decode([3, 12, 2, 5]) == "09"
    with pytest.raises(DataError, match="only encodes 0-9"):
        digits.encode("12a")


def test_hf_tokenizer_json_maps_special_tokens_to_reserved_ids(tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "cat": 5, "sat": 6}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    hf = HFTokenizer(str(path))
    assert hf.vocab_size == 7 + 3
    assert hf.encode("the cat sat") == [4 + 3, 5 + 3, 6 + 3]
    assert hf.to_theirs == {0: 0, 1: 2, 2: 3}  # pad, bos, eos -> [PAD], [CLS], [SEP]
    assert hf.decode([1, 7, 8, 9, 2, 8]) == "the cat sat"
    assert hf.encode("[CLS] the") == [1, 7]  # their bos token becomes our bos id
