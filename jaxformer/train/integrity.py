"""Checksum manifests that make a checkpoint directory verifiable.

`seal(directory)` hashes every file of a finished checkpoint (SHA-256 + size) into
`jaxformer_manifest.json` inside it; `verify(directory)` re-hashes and reports the first
problem (a missing file, a different size, different bytes, no manifest) or None.
Truncated, deleted and garbled files are all caught, independent of whether the storage
format would notice. Orbax writes the step into a temporary directory and renames it when
complete; sealing runs just before that rename, so a finalized step always carries its
manifest. Orbax rewrites a few bookkeeping files after sealing (`UNSEALED`); those are
checked only for being readable JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MANIFEST_NAME = "jaxformer_manifest.json"
# Top-level files Orbax updates after our seal (commit timestamp, commit marker).
UNSEALED = ("_CHECKPOINT_METADATA", "commit_success.txt")
_CHUNK = 1 << 22


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sealed_files(directory: Path) -> list[str]:
    files = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative != MANIFEST_NAME and relative not in UNSEALED:
            files.append(relative)
    return sorted(files)


def _hash_all(directory: Path, names: list[str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        return list(pool.map(lambda name: file_digest(directory / name), names))


def seal(directory: str | Path) -> Path:
    """Write the manifest of every file under `directory`; returns the manifest path."""
    directory = Path(directory)
    names = _sealed_files(directory)
    digests = _hash_all(directory, names)
    entries = {
        name: {"size": (directory / name).stat().st_size, "sha256": digest}
        for name, digest in zip(names, digests, strict=True)
    }
    manifest = directory / MANIFEST_NAME
    partial = directory / f".{MANIFEST_NAME}.partial"
    partial.write_text(json.dumps({"version": 1, "files": entries}, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, manifest)
    return manifest


def verify(directory: str | Path) -> str | None:
    """None when every sealed file is present with its recorded size and hash; else the first problem, in words."""
    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        return f"no {MANIFEST_NAME} (the save was interrupted before it was sealed, or it was not written by jaxformer)"
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in entries.items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return f"{MANIFEST_NAME} is unreadable ({type(err).__name__})"
    for name, (size, _) in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            return f"file {name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"file {name} has {actual} bytes, expected {size} (truncated or overwritten)"
    names = sorted(expected)
    for name, digest in zip(names, _hash_all(directory, names), strict=True):
        if digest != expected[name][1]:
            return f"file {name} has different bytes than when it was saved (checksum mismatch)"
    for name in UNSEALED[:1]:
        path = directory / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                return f"file {name} is not valid JSON"
    return None
