"""Files of a Hugging Face model directory: locating it, reading config.json and weights, writing them.

Weights are read with `safetensors.numpy` (torch is not needed). bfloat16
tensors, which NumPy cannot name, are decoded from the raw file with `ml_dtypes`
and upcast to float32. `pytorch_model.bin` is a pickle, which can run code when
loaded, so it is only read with an explicit `allow_pickle=True` (and needs torch).

`stored_tensors(directory)` is the lazy view used by `jaxformer.hf.load`: each safetensors tensor is
known by its header (name, dtype, shape, byte range) and read from disk alone, in its stored dtype,
only when converted (`np.asarray(stored)`), so a load never holds the whole checkpoint on the host.
`write_safetensors` writes any NumPy dtype, bfloat16 included, in the format's byte layout.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

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


STORED_NAMES = {np.dtype(dtype): name for name, dtype in RAW_DTYPES.items()}


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """(header JSON, byte offset of the data) of a safetensors file, reading only the header."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"cannot read {str(path)!r}: not a safetensors file (shorter than its header size).")
        (size,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"cannot read {str(path)!r}: its safetensors header is not valid JSON.") from None
    return header, 8 + size


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors file: header facts now, the values only when asked for.

    `np.asarray(stored)` (or `read()`) reads exactly its bytes from disk into a fresh array of the
    stored dtype (bfloat16 as `ml_dtypes.bfloat16`); nothing stays cached or memory-mapped.
    """

    path: Path
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read(self) -> np.ndarray:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            array = np.fromfile(handle, dtype=self.dtype, count=self.size)
        if array.size != self.size:
            raise CheckpointError(
                f"{str(self.path)!r}: tensor {self.name!r} is truncated (file shorter than its header)."
            )
        return array.reshape(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.read()
        return array if dtype is None else array.astype(dtype, copy=False)


def stored_file(path: Path) -> dict[str, StoredTensor]:
    header, base = read_header(path)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in RAW_DTYPES:
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        dtype, shape = np.dtype(RAW_DTYPES[info["dtype"]]), tuple(info["shape"])
        start, end = info["data_offsets"]
        if end - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} has {end - start} bytes for shape {list(shape)}.")
        out[name] = StoredTensor(path, name, dtype, shape, base + start)
    return out


def stored_tensors(directory: Path, allow_pickle: bool = False) -> Mapping[str, Any]:
    """Weight tensors of the model directory, lazily (`StoredTensor`) when stored as safetensors.

    A pickle checkpoint (allow_pickle=True only) is read whole, as `read_tensors` does.
    """
    if (directory / SAFETENSORS).is_file():
        return stored_file(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        weight_map = read_json(directory / SAFETENSORS_INDEX).get("weight_map", {})
        tensors: dict[str, StoredTensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).is_file():
                raise FileNotFoundError(
                    f"{str(directory / SAFETENSORS_INDEX)!r} names shard {shard!r}, which is missing."
                )
            tensors.update(stored_file(directory / shard))
        return tensors
    return read_tensors(directory, allow_pickle=allow_pickle)


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """One safetensors file: 8-byte little-endian header size, JSON header (padded to 8 bytes), raw data.

    Tensors keep their dtype (bfloat16 arrays of `ml_dtypes` are written as BF16), one at a time.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, tensor in tensors.items():
        dtype = np.dtype(tensor.dtype)
        if dtype not in STORED_NAMES:
            raise CheckpointError(f"cannot write tensor {name!r}: dtype {dtype} has no safetensors name.")
        header[name] = {
            "dtype": STORED_NAMES[dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for tensor in tensors.values():
            handle.write(np.ascontiguousarray(tensor).tobytes(order="C"))


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
        write_safetensors(directory / SAFETENSORS, tensors, metadata={"format": "pt"})
        return
    groups = shard_names(tensors, max_shard_size)
    weight_map = {}
    for index, names in enumerate(groups, start=1):
        shard = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(directory / shard, {n: tensors[n] for n in names}, metadata={"format": "pt"})
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
