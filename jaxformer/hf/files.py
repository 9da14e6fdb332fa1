"""Files of a Hugging Face model directory: locating it, reading config.json and weights, writing them.

Weights are read with `safetensors.numpy` (torch is not needed). bfloat16
tensors, which NumPy cannot name, are decoded from the raw file with `ml_dtypes`
and upcast to float32. `pytorch_model.bin` is a pickle, which can run code when
loaded, so it is only read with an explicit `allow_pickle=True` (and needs torch).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxformer.errors import CheckpointError, CheckpointNotFoundError, InputError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "source.spm",
    "target.spm",
    "sentencepiece.bpe.model",
)


def model_dir(path: str | Path) -> Path:
    """The directory holding config.json: `path` itself, or a Hub cache repo dir's snapshot.

    Accepts a plain local model directory, a Hub cache snapshot
    (.../models--org--name/snapshots/<revision>) or the cache repo directory
    (.../models--org--name), which resolves through refs/main.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise CheckpointNotFoundError(f"Hugging Face model directory {str(root)!r} does not exist.")
    if not root.is_dir():
        raise CheckpointError(f"{str(root)!r} is a file; pass the model directory that holds config.json.")
    if (root / "config.json").is_file():
        return root
    snapshots = root / "snapshots"
    if snapshots.is_dir():
        ref = root / "refs" / "main"
        if ref.is_file() and (snapshots / ref.read_text().strip() / "config.json").is_file():
            return snapshots / ref.read_text().strip()
        candidates = sorted(p for p in snapshots.iterdir() if (p / "config.json").is_file())
        if len(candidates) == 1:
            return candidates[0]
        raise CheckpointError(
            f"Hub cache repo {str(root)!r} has {len(candidates)} snapshots with a config.json and no usable refs/main; "
            "pass one snapshot directory (snapshots/<revision>) instead."
        )
    found = sorted(p.name for p in root.iterdir())[:20]
    raise CheckpointNotFoundError(
        f"no config.json in {str(root)!r} (found: {found}); pass a Hugging Face model directory."
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {err}") from None


def read_config(directory: Path) -> dict[str, Any]:
    return read_json(directory / "config.json")


def read_tensors(directory: Path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """All weight tensors of the model directory as NumPy arrays (bfloat16 upcast to float32)."""
    if (directory / SAFETENSORS).is_file():
        return read_safetensors(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        return read_sharded(directory, SAFETENSORS_INDEX, read_safetensors)
    pickles = [name for name in (PICKLE, PICKLE_INDEX) if (directory / name).is_file()]
    if pickles:
        if not allow_pickle:
            raise CheckpointError(
                f"{str(directory / pickles[0])!r} is a pickle file (PyTorch format) and there is no model.safetensors; "
                "pickles can execute code when loaded. Pass allow_pickle=True if you trust it, "
                "or convert it to safetensors first."
            )
        if pickles[0] == PICKLE:
            return read_pickle(directory / PICKLE)
        return read_sharded(directory, PICKLE_INDEX, read_pickle)
    found = sorted(p.name for p in directory.iterdir())
    raise CheckpointNotFoundError(f"no {SAFETENSORS} (or {PICKLE}) in {str(directory)!r}; found {found}.")


def read_sharded(directory: Path, index_name: str, reader: Any) -> dict[str, np.ndarray]:
    weight_map = read_json(directory / index_name).get("weight_map", {})
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(reader(directory / shard))
    return tensors


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except (TypeError, SafetensorError) as err:
        if "bfloat16" not in str(err):
            raise CheckpointError(f"cannot read {str(path)!r}: {err}") from None
        return read_safetensors_raw(path)


# safetensors dtype names -> NumPy dtypes, for the raw reader.
RAW_DTYPES = {
    "BF16": ml_dtypes.bfloat16,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors_raw(path: Path) -> dict[str, np.ndarray]:
    """Decode a safetensors file directly (8-byte header size, JSON header, data); bfloat16 -> float32."""
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    base = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in RAW_DTYPES:
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype=RAW_DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = array.astype(np.float32) if info["dtype"] == "BF16" else array.copy()
    return tensors


def read_pickle(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {str(path)!r} needs PyTorch (pip install torch); or convert it to safetensors."
        ) from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {
        name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy() for name, tensor in state.items()
    }


SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}


def parse_size(size: int | str | None) -> int | None:
    """Bytes from 1000000, "200MB", "5GB" or "2GiB" (transformers' max_shard_size spelling); None stays None."""
    if size is None or isinstance(size, int):
        if isinstance(size, int) and size <= 0:
            raise InputError(f"max_shard_size={size} must be positive.")
        return size
    text = str(size).strip().upper()
    for unit in sorted(SIZE_UNITS, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * SIZE_UNITS[unit])
    raise InputError(f"max_shard_size={size!r} is not a size; write bytes or e.g. '200MB', '5GB'.")


def shard_names(tensors: dict[str, np.ndarray], max_shard_size: int) -> list[list[str]]:
    """Tensor names grouped in file order into shards of at most `max_shard_size` bytes (a bigger tensor alone)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, tensor in tensors.items():
        if shards[-1] and used + tensor.nbytes > max_shard_size:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += tensor.nbytes
    return shards


def write_model(
    directory: Path, config: dict[str, Any], tensors: dict[str, np.ndarray], max_shard_size: int | None = None
) -> None:
    """config.json + model.safetensors, or shards + model.safetensors.index.json when over max_shard_size bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    total = sum(t.nbytes for t in tensors.values())
    if max_shard_size is None or total <= max_shard_size:
        save_file(tensors, str(directory / SAFETENSORS), metadata={"format": "pt"})
        return
    groups = shard_names(tensors, max_shard_size)
    weight_map = {}
    for index, names in enumerate(groups, start=1):
        shard = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, str(directory / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard))
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / SAFETENSORS_INDEX).write_text(json.dumps(index_json, indent=2, sort_keys=True) + "\n")


def copy_tokenizer_files(source: str | Path, directory: Path) -> list[str]:
    """Copy the tokenizer files found in `source` into `directory`; returns their names."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise CheckpointNotFoundError(f"tokenizer_dir {str(source)!r} is not a directory.")
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    if not copied:
        raise CheckpointNotFoundError(
            f"tokenizer_dir {str(source)!r} holds none of the tokenizer files {list(TOKENIZER_FILES)}."
        )
    for name in copied:
        shutil.copyfile(source / name, directory / name)
    return copied
