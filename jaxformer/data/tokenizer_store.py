"""The run's tokenizer, stored in the workdir when training starts (issue 20).

    <workdir>/tokenizer/run_tokenizer.json      kind, vocab_size, sha256 of the ids it assigns
                                                (char: the alphabet; sentencepiece/hf: the file's sha256)
    <workdir>/tokenizer/run_tokenizer.model     copy of the SentencePiece model (sentencepiece)
    <workdir>/tokenizer/run_tokenizer.hf.json   copy of the tokenizer.json (hf)

Every later resume compares the tokenizer rebuilt from the data with the stored one
(`check_matches`: a different alphabet or file is one `TokenizerChangedError` line, even when the
vocabulary size is the same), and evaluation, generation, export and the demo use the stored one
(`load`), so the ids always mean what they meant in training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from jaxformer.data.errors import DataError
from jaxformer.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    DigitsTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
)

MANIFEST = "run_tokenizer.json"
_FILES = {"sentencepiece": "run_tokenizer.model", "hf": "run_tokenizer.hf.json"}


class TokenizerChangedError(DataError):
    """The tokenizer the data gives now differs from the one the run was trained with."""


def directory(workdir: str | Path) -> Path:
    return Path(workdir) / "tokenizer"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source_file(tokenizer: Tokenizer) -> Path | None:
    if isinstance(tokenizer, SentencePieceTokenizer):
        return Path(tokenizer.model_file)
    if isinstance(tokenizer, HFTokenizer):
        return Path(tokenizer.file)
    return None


def describe(tokenizer: Tokenizer) -> dict[str, Any]:
    """What identifies `tokenizer`'s ids: kind, vocab_size and the alphabet (char) or file hash."""
    info: dict[str, Any] = {"kind": tokenizer.kind, "vocab_size": int(tokenizer.vocab_size)}
    if isinstance(tokenizer, CharTokenizer):
        info["alphabet"] = tokenizer.alphabet
    source = _source_file(tokenizer)
    if source is not None:
        info["sha256"] = _sha256(source)
    return info


def stored(workdir: str | Path) -> dict[str, Any] | None:
    """The stored manifest, or None when the workdir has none (a run from before issue 20)."""
    manifest = directory(workdir) / MANIFEST
    if not manifest.is_file():
        return None
    try:
        return dict(json.loads(manifest.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{manifest} is not valid JSON ({err}); restore it or start a new workdir.") from None


def save(tokenizer: Tokenizer, workdir: str | Path) -> None:
    """Store `tokenizer` in `<workdir>/tokenizer/` (files first, the manifest last, each by rename)."""
    target = directory(workdir)
    target.mkdir(parents=True, exist_ok=True)
    source = _source_file(tokenizer)
    if source is not None:
        copy = target / _FILES[tokenizer.kind]
        if source.resolve() != copy.resolve():
            partial = copy.with_name(copy.name + ".partial")
            shutil.copyfile(source, partial)
            os.replace(partial, copy)
    manifest = target / MANIFEST
    partial = manifest.with_name(MANIFEST + ".partial")
    partial.write_text(json.dumps(describe(tokenizer), indent=2, sort_keys=True), encoding="utf-8")
    os.replace(partial, manifest)


def load(workdir: str | Path) -> Tokenizer | None:
    """The run's stored tokenizer, or None when the workdir stores none."""
    info = stored(workdir)
    if info is None:
        return None
    kind = info.get("kind")
    if kind == "char":
        tokenizer: Tokenizer = CharTokenizer(str(info["alphabet"]))
    elif kind == "byte":
        tokenizer = ByteTokenizer()
    elif kind == "digits":
        tokenizer = DigitsTokenizer()
    elif kind in _FILES:
        file = directory(workdir) / _FILES[kind]
        if not file.is_file():
            raise DataError(f"the run's stored tokenizer file {file} is missing; restore it from a backup.")
        if _sha256(file) != info.get("sha256"):
            raise DataError(f"the run's stored tokenizer file {file} does not match its checksum; restore it.")
        tokenizer = SentencePieceTokenizer(str(file)) if kind == "sentencepiece" else HFTokenizer(str(file))
    else:
        raise DataError(f"{directory(workdir) / MANIFEST} names an unknown tokenizer kind {kind!r}.")
    if tokenizer.vocab_size != info.get("vocab_size"):
        raise DataError(f"the stored {kind} tokenizer has {tokenizer.vocab_size} ids, not {info.get('vocab_size')}.")
    return tokenizer


def check_matches(tokenizer: Tokenizer, workdir: str | Path) -> None:
    """Raise TokenizerChangedError unless `tokenizer` assigns the ids of the run's stored tokenizer."""
    before = stored(workdir)
    if before is None:
        return
    now = describe(tokenizer)
    if before == now:
        return
    where = directory(workdir) / MANIFEST
    fix = (
        f"the checkpoints' ids would mean other tokens. Restore the original data or tokenizer, "
        f"or train in a new workdir (stored tokenizer: {where})."
    )
    if before.get("kind") != now["kind"]:
        raise TokenizerChangedError(
            f"the run was trained with the {before.get('kind')} tokenizer, now {now['kind']}; {fix}"
        )
    if now["kind"] == "char":
        old, new = set(str(before.get("alphabet", ""))), set(now["alphabet"])
        gone, added = "".join(sorted(old - new)), "".join(sorted(new - old))
        raise TokenizerChangedError(
            f"the training text's characters changed since the run started (removed {gone!r}, added {added!r}; "
            f"vocabulary {before.get('vocab_size')} -> {now['vocab_size']}), so every char id shifts; {fix}"
        )
    raise TokenizerChangedError(
        f"the {now['kind']} tokenizer file changed since the run started (sha256 {str(before.get('sha256'))[:12]} -> "
        f"{str(now.get('sha256'))[:12]}, vocabulary {before.get('vocab_size')} -> {now['vocab_size']}); {fix}"
    )
