"""A tiny real WordPiece tokenizer.json (BERT-style: lower case, [CLS] A [SEP] B [SEP]) built with `tokenizers`."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "where",
    "is",
    "the",
    "capital",
    "of",
    "france",
    "paris",
    "lies",
    "on",
    "seine",
    "river",
    "city",
    "old",
    "and",
    "large",
    "what",
    "flows",
    "through",
    "it",
]
PIECES = ["cap", "##ital", "##s", "fr", "##ance", "."]
VOCAB = SPECIAL + WORDS + PIECES


def write_tokenizer(directory: Path) -> Tokenizer:
    vocab = {token: i for i, token in enumerate(VOCAB)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    (directory / "tokenizer_config.json").write_text(json.dumps({**special, "mask_token": "[MASK]"}))
    return tokenizer
