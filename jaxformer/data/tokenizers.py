"""Tokenizers with one interface. Ids 0/1/2 are pad/bos/eos in every one of them.

    encode(text) -> list[int]        plain content ids (no bos/eos added)
    encode_batch(texts) -> list[list[int]]
    decode(ids) -> str               stops at the first eos; drops pad and bos
    vocab_size, pad_id, bos_id, eos_id

char: the characters of the training text (+ unk = 3); byte: UTF-8 bytes + 3; digits: "0".."9" ->
3..12 (synthetic tasks); sentencepiece: trained on the training text with byte fallback and no
normalisation, so decode(encode(x)) == x exactly (see `sentencepiece_train.py`); hf: a `tokenizers`
tokenizer.json whose ids are shifted by 3 so that its own pad/bos/eos land on 0/1/2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizerImpl

from jaxformer.data.errors import DataError, DataFileNotFoundError

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
NUM_RESERVED = 3


def content_ids(ids: Iterable[int]) -> list[int]:
    """The ids before the first eos, without pad and bos."""
    out = []
    for token in ids:
        token = int(token)
        if token == EOS_ID:
            break
        if token not in (PAD_ID, BOS_ID):
            out.append(token)
    return out


class Tokenizer:
    """Base class: subclasses implement `encode` and `_decode_content`."""

    kind = "base"
    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return self._decode_content(content_ids(ids))

    def _decode_content(self, ids: list[int]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character of a fixed alphabet; unknown characters map to UNK_ID (decoded as U+FFFD)."""

    kind = "char"
    UNK_ID = 3

    def __init__(self, alphabet: str) -> None:
        chars = sorted(set(alphabet))
        self.alphabet = "".join(chars)
        self._ids = {c: i + 4 for i, c in enumerate(chars)}
        self._chars = ["", "", "", "\ufffd", *chars]
        self.vocab_size = len(self._chars)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        alphabet: set[str] = set()
        for text in texts:
            alphabet.update(text)
        if not alphabet:
            raise DataError("the training text is empty, so the char tokenizer has no alphabet.")
        return cls("".join(alphabet))

    def encode(self, text: str) -> list[int]:
        table, unk = self._ids, self.UNK_ID
        return [table.get(c, unk) for c in text]

    def _decode_content(self, ids: list[int]) -> str:
        chars = self._chars
        return "".join(chars[i] if 0 <= i < len(chars) else "\ufffd" for i in ids)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes shifted by 3 (vocab 259): no unknowns, exact round trip."""

    kind = "byte"
    vocab_size = 256 + NUM_RESERVED

    def encode(self, text: str) -> list[int]:
        return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + NUM_RESERVED).tolist()

    def _decode_content(self, ids: list[int]) -> str:
        return bytes(i - NUM_RESERVED for i in ids if NUM_RESERVED <= i < self.vocab_size).decode(
            "utf-8", errors="replace"
        )


class DigitsTokenizer(Tokenizer):
    """The ten digits as ids 3..12 (vocab 13), for the synthetic tasks."""

    kind = "digits"
    vocab_size = 10 + NUM_RESERVED

    def encode(self, text: str) -> list[int]:
        if not text.isdigit() or not text.isascii():
            bad = next((c for c in text if not ("0" <= c <= "9")), "")
            raise DataError(
                f"the digits tokenizer only encodes 0-9, got {bad!r} in {text[:40]!r}; use tokenizer='char'."
            )
        return [ord(c) - ord("0") + NUM_RESERVED for c in text]

    def _decode_content(self, ids: list[int]) -> str:
        return "".join(chr(i - NUM_RESERVED + ord("0")) if NUM_RESERVED <= i < self.vocab_size else "?" for i in ids)


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model whose pad/bos/eos/unk ids are 0/1/2/3."""

    kind = "sentencepiece"

    def __init__(self, model_file: str) -> None:
        self.model_file = str(model_file)
        self.processor = spm.SentencePieceProcessor(model_file=self.model_file)
        ids = (self.processor.pad_id(), self.processor.bos_id(), self.processor.eos_id())
        if ids != (PAD_ID, BOS_ID, EOS_ID):
            raise DataError(
                f"SentencePiece model {self.model_file!r} has pad/bos/eos ids {ids}, not (0, 1, 2); "
                "retrain it with pad_id=0 bos_id=1 eos_id=2 (delete the file to let jaxformer train one)."
            )
        self.vocab_size = int(self.processor.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return list(self.processor.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(texts))

    def _decode_content(self, ids: list[int]) -> str:
        return self.processor.decode(ids)


_SPECIAL_NAMES = {
    PAD_ID: ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    BOS_ID: ("<s>", "[CLS]", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"),
    EOS_ID: ("</s>", "[SEP]", "<eos>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>"),
}


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` tokenizer.json. Its ids are shifted by 3; its own pad/bos/eos tokens
    (found by their usual names) become 0/1/2, so padding is 0 as everywhere else in jaxformer."""

    kind = "hf"

    def __init__(self, path: str) -> None:
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.exists():
            raise DataFileNotFoundError(
                f"tokenizer file {str(file)!r} does not exist; set data.tokenizer_path to a tokenizer.json."
            )
        self.file = file
        try:
            self.impl = HFTokenizerImpl.from_file(str(file))
        except Exception as err:  # the Rust error types are not importable
            raise DataError(f"could not read {str(file)!r} as a tokenizers tokenizer.json: {err}") from None
        # A tokenizer.json may carry padding/truncation settings (sentence-transformers saves Fixed(128)
        # padding): jaxformer pads and cuts itself, so encode() must return the text's ids only.
        self.impl.no_padding()
        self.impl.no_truncation()
        their_size = int(self.impl.get_vocab_size(with_added_tokens=True))
        self.vocab_size = their_size + NUM_RESERVED
        self.to_ours = np.arange(their_size, dtype=np.int64) + NUM_RESERVED  # their id -> our id
        self.to_theirs: dict[int, int] = {}  # our reserved id -> their special id
        for ours, names in _SPECIAL_NAMES.items():
            for name in names:
                theirs = self.impl.token_to_id(name)
                if theirs is not None:
                    self.to_theirs[ours] = theirs
                    break
        for ours in (BOS_ID, PAD_ID, EOS_ID):  # eos wins where one token serves several roles
            if ours in self.to_theirs:
                self.to_ours[self.to_theirs[ours]] = ours

    def encode(self, text: str) -> list[int]:
        return self.to_ours[self.impl.encode(text, add_special_tokens=False).ids].tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self.impl.encode_batch(list(texts), add_special_tokens=False)
        return [self.to_ours[e.ids].tolist() for e in encodings]

    def _decode_content(self, ids: list[int]) -> str:
        theirs = [i - NUM_RESERVED for i in ids if i >= NUM_RESERVED]
        return self.impl.decode(theirs, skip_special_tokens=False)
