"""`model.init_from`: start a run from a Hugging Face checkpoint (a directory or a Hub repo id) or a jaxformer workdir.

    experiment, start, tokenizer = prepare(experiment)     # what `jaxformer train` does before training
    train_and_evaluate(experiment, workdir, start, tokenizer)

The architecture comes from the checkpoint: `model.*` keys set next to `init_from` override its
config, and an override that changes the shape of a pretrained parameter (d_model, num_layers,
num_heads, ...) stops the run with one line naming it; dropout, dtypes, scan_layers, remat,
attention_impl and the heads (encoder_head, num_classes) are free. New parameters (a
classification head the checkpoint lacks, rows of a resized vocabulary) are initialised and named
in the log. Unless `data.tokenizer` / `data.tokenizer_path` name one, the checkpoint's tokenizer is
the run's (stored in the workdir like any run's tokenizer): a HF checkpoint's tokenizer.json, whose
ids jaxformer shifts by 3 to keep pad/bos/eos at 0/1/2 (data/tokenizers.py HFTokenizer), so the
embedding rows (and every other vocabulary-sized parameter) are permuted to match: row `ours` holds
the checkpoint's row `theirs`. `export_hf` (`jaxformer export --hf`) permutes them back.

Nothing is read until needed: `prepare` reads only config files; the weights are imported when a
fresh state is built (never when the run resumes from its own checkpoint) or, for LoRA, when the
frozen base is needed (every start; its fingerprint is checked against the checkpoints').
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxformer import models
from jaxformer.config import ModelConfig, padding_position
from jaxformer.config.backend import check_backend
from jaxformer.data import tokenizer_store
from jaxformer.data.tokenizers import NUM_RESERVED, HFTokenizer, Tokenizer
from jaxformer.errors import CheckpointError, ConfigError
from jaxformer.experiment import Experiment, to_dataclass
from jaxformer.hf import convert, files, hub, peft
from jaxformer.train import checkpoint as checkpoint_lib
from jaxformer.train.init_from import Start

VOCAB_AXIS = "vocab"


@dataclasses.dataclass(frozen=True)
class Source:
    """A located `model.init_from`: a HF model directory or a jaxformer workdir (or export)."""

    kind: str  # "hf" or "workdir"
    path: Path
    config: ModelConfig  # the checkpoint's own architecture


def locate(init_from: str, revision: str | None) -> Source:
    """The checkpoint `init_from` names, with its ModelConfig (config files only; no weights are read)."""
    where = f"model.init_from={init_from!r}"
    if hub.is_repo_id(init_from):
        directory = hub.resolve(init_from, revision)  # HubError (one line: how to supply it offline)
        return Source("hf", directory, _hf_config(directory))
    if revision is not None:
        raise ConfigError(f"model.init_revision applies to a Hub repo id, but {where} is a local path; drop it.")
    path = Path(init_from).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{where} does not exist; give a Hugging Face model directory (with config.json), a Hub repo id "
            "(org/name) or a jaxformer workdir."
        )
    if (path / checkpoint_lib.EXPORT_CONFIG).is_file():
        if not (path / "params").is_dir() and not checkpoint_lib._good_steps(path / "checkpoints"):
            raise ConfigError(
                f"{where} is a jaxformer workdir with no checkpoint yet; train it first (or wait for its first "
                "checkpoint.every steps), or point at another run."
            )
        config = ModelConfig.from_dict(json.loads((path / checkpoint_lib.EXPORT_CONFIG).read_text(encoding="utf-8")))
        return Source("workdir", path, config)
    if (path / "checkpoints").is_dir():
        raise ConfigError(f"{where} is a jaxformer workdir without model_config.json; it has no usable checkpoint.")
    directory = files.model_dir(path)  # a HF directory or Hub cache dir; else one line naming what is missing
    return Source("hf", directory, _hf_config(directory))


def _hf_config(directory: Path) -> ModelConfig:
    hf_config = files.read_config(directory)
    arch = convert.architecture_of(hf_config, str(directory / "config.json"))
    tensors = convert.normalize_names(arch, files.stored_tensors(directory))
    return arch.config_from_hf(hf_config, tensors)


def model_config(source: Source, overrides: dict[str, Any]) -> ModelConfig:
    """The checkpoint's config with the experiment's `model.*` overrides; shape-changing ones are refused."""
    config = to_dataclass(ModelConfig, overrides, "model", base=source.config)
    before = convert.param_shapes(source.config)
    changed = []
    for key, value in sorted(overrides.items()):
        try:
            shapes = convert.param_shapes(source.config.replace(**{key: value}))
        except (ValueError, TypeError):  # valid only together with other overrides: judged with them below
            continue
        if _body_differences(before, shapes, source.config):
            changed.append(f"model.{key}={value!r} (checkpoint: {getattr(source.config, key)!r})")
    if not changed and _body_differences(before, convert.param_shapes(config), source.config):
        changed = [f"model.{key}={value!r}" for key, value in sorted(overrides.items())]
    if changed:
        raise ConfigError(
            f"model.init_from={str(source.path)!r}: {', '.join(changed)} would change the shape of pretrained "
            "parameters; drop these overrides (the architecture comes from the checkpoint; dropout, dtypes, "
            "scan_layers, remat, attention_impl and the heads may change)."
        )
    check_backend(config)
    return config


def _body_differences(
    before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]], config: ModelConfig
) -> list[str]:
    """Parameters of `before` dropped or reshaped in `after`, except heads and changes along a vocabulary axis."""
    vocab_axes = _vocab_axes(config)
    out = []
    for path, shape in before.items():
        if path.split("/")[0] in convert.HEAD_MODULES:
            continue
        other = after.get(path)
        if other == shape:
            continue
        if other is not None and path in vocab_axes and len(other) == len(shape):
            axis = vocab_axes[path]
            if all(x == y for i, (x, y) in enumerate(zip(shape, other, strict=True)) if i != axis):
                continue
        out.append(path)
    return out


def checkpoint_tokenizer(source: Source) -> Tokenizer:
    """The tokenizer stored with the checkpoint: a HF tokenizer.json, or the workdir's run tokenizer."""
    if source.kind == "hf":
        file = source.path / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(
                f"model.init_from={str(source.path)!r} has no tokenizer.json; set data.tokenizer and "
                "data.tokenizer_path to the tokenizer its weights were trained with."
            )
        return HFTokenizer(str(file))
    tokenizer = tokenizer_store.load(source.path)
    if tokenizer is None:
        raise ConfigError(
            f"model.init_from={str(source.path)!r} stores no tokenizer (a run from before tokenizers were stored); "
            "set data.tokenizer (and data.tokenizer_path) to the one it was trained with."
        )
    return tokenizer


def _data_with(experiment: Experiment, tokenizer: Tokenizer) -> Any:
    """data.tokenizer (and tokenizer_path) naming the checkpoint's tokenizer: the data config says what is used."""
    path = getattr(tokenizer, "file", None) or getattr(tokenizer, "model_file", None)
    return dataclasses.replace(
        experiment.data,
        tokenizer=tokenizer.kind,  # type: ignore[arg-type]  # a TokenizerKind: every Tokenizer's kind is one
        tokenizer_path=None if path is None else str(path),
    )


def prepare(experiment: Experiment) -> tuple[Experiment, Start | None, Tokenizer | None]:
    """(experiment with the checkpoint's model, the Start of its weights, the run's tokenizer or None).

    An experiment without model.init_from passes through (Start None, tokenizer None).
    """
    init_from = experiment.init_from
    if init_from is None:
        return experiment, None, None
    source = locate(init_from, experiment.init_revision)
    config = model_config(source, experiment.model_overrides)
    tokenizer = checkpoint_tokenizer(source) if experiment.tokenizer_from_init else None
    data = _data_with(experiment, tokenizer) if tokenizer is not None else experiment.data
    vocab_map = _vocab_map(source, tokenizer) if tokenizer is not None else None
    if isinstance(tokenizer, HFTokenizer) and vocab_map is not None:
        config = reindexed_config(config, tokenizer)
    # experiment.raw stays as written (validating it again gives this same run, e.g. for export); the run's
    # tokenizer is in <workdir>/tokenizer/ as for every run.
    experiment = dataclasses.replace(experiment, model=config, data=data)

    adapters = None
    if experiment.lora_init_adapter is not None:
        experiment, adapters = _with_adapter(experiment, source, experiment.lora_init_adapter)

    def params(run_config: ModelConfig) -> Any:
        return import_params(source, run_config, vocab_map, experiment.seed)

    return experiment, Start(init_from, params, experiment.init_revision, adapters), tokenizer


def _with_adapter(experiment: Experiment, source: Source, directory: str) -> tuple[Experiment, Any]:
    """The experiment with the PEFT adapter's LoraConfig (rank, alpha, targets; lora.dropout kept) and the adapters.

    A PEFT adapter names Hugging Face modules, so its base must be a Hugging Face checkpoint; an adapter
    of another architecture or size is one CheckpointError (hf/peft.py names the module that does not fit).
    """
    if source.kind != "hf":
        raise ConfigError(
            f"lora.init_adapter={directory!r} is a PEFT adapter of a Hugging Face model, but model.init_from="
            f"{str(source.path)!r} is a jaxformer workdir; start from the adapter's base checkpoint instead."
        )
    path = Path(directory).expanduser()
    if not path.exists():
        raise ConfigError(f"lora.init_adapter={directory!r} does not exist; give a PEFT adapter directory.")
    spec, adapters = peft.load_adapter(experiment.model, path)
    assert experiment.lora is not None  # lora.init_adapter turns LoRA on (experiment.validate)
    spec = dataclasses.replace(spec, dropout=experiment.lora.dropout)
    print(f"init_from: LoRA adapters from {path} (rank {spec.rank}, alpha {spec.alpha:g})", flush=True)
    return dataclasses.replace(experiment, lora=spec), jax.device_get(adapters)


def reindexed_config(config: ModelConfig, tokenizer: HFTokenizer) -> ModelConfig:
    """The checkpoint's config for its tokenizer re-indexed by jaxformer (pad/bos/eos at 0/1/2, the rest + 3).

    The token ids the config names move with the vocabulary rows: pad_token_id (the padding masks) becomes
    the tokenizer's pad, and BART's classifier_token_id (eos) its new id. RoBERTa's padding offset is a
    property of the position table, not of the pad token, so it stays where the checkpoint had it
    (`padding_position`): the imported model computes the checkpoint's function on re-indexed ids.
    """
    changes: dict[str, Any] = {"pad_token_id": tokenizer.pad_id}
    if config.position_rule == "padding_offset":
        changes["padding_position"] = padding_position(config)
    if config.classifier_token_id is not None:
        changes["classifier_token_id"] = int(tokenizer.to_ours[config.classifier_token_id])
    return config.replace(**changes)


def _vocab_map(source: Source, tokenizer: Tokenizer) -> np.ndarray | None:
    """ours id -> the checkpoint's row (-1: a new row) when a HF checkpoint's own tokenizer is shifted."""
    if source.kind != "hf" or not isinstance(tokenizer, HFTokenizer):
        return None
    rows = np.arange(tokenizer.vocab_size, dtype=np.int64) - NUM_RESERVED
    for ours in range(NUM_RESERVED):
        rows[ours] = tokenizer.to_theirs.get(ours, -1)
    return rows


def _source_params(source: Source) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """The checkpoint's parameters, unrolled and flat ("decoder/layers_0/...": host array), and its config."""
    if source.kind == "hf":
        _, params, config = convert.load(source.path)
    else:
        params, config = checkpoint_lib.restore_params(source.path)
    flat = convert.flat_params(convert.unscan(jax.device_get(params)))
    return {k: np.asarray(v) for k, v in flat.items()}, config


def _vocab_axes(config: ModelConfig) -> dict[str, int]:
    """{unrolled param path: index of its "vocab" axis} for the vocabulary-sized parameters."""
    specs = convert.flat_params(models.logical_axes(config.replace(scan_layers=False)))
    return {p: tuple(spec).index(VOCAB_AXIS) for p, spec in specs.items() if VOCAB_AXIS in tuple(spec)}


def _resize(array: np.ndarray, axis: int, size: int, rows: np.ndarray | None, path: str) -> tuple[np.ndarray, int]:
    """`array` with `size` entries along `axis`: entry i is `array[rows[i]]` (rows None: i itself); indices
    outside the checkpoint become the mean entry (a neutral start for a new token). Returns (array, new)."""
    have = array.shape[axis]
    index = np.arange(size) if rows is None else rows
    fresh = (index < 0) | (index >= have)
    taken = np.take(array, np.clip(index, 0, have - 1), axis=axis)
    if fresh.any():
        mean = array.mean(axis=axis, keepdims=True).astype(array.dtype)
        shape = [1] * array.ndim
        shape[axis] = size
        taken = np.where(fresh.reshape(shape), mean, taken)
    return taken, int(fresh.sum())


def import_params(source: Source, config: ModelConfig, vocab_map: np.ndarray | None, seed: int) -> Any:
    """Host parameters of the run's `config` (its layout, dtypes) from the checkpoint; new ones initialised."""
    old, _ = _source_params(source)
    shapes = convert.param_shapes(config)
    vocab_axes = _vocab_axes(config)
    dtypes = {
        p: np.dtype(v.dtype)
        for p, v in convert.flat_params(models.abstract_params(config.replace(scan_layers=False))).items()
    }
    new_heads = sorted(  # absent, or a head of another size (e.g. a classifier with other num_classes)
        p
        for p, shape in shapes.items()
        if p not in old
        or (p.split("/")[0] in convert.HEAD_MODULES and p not in vocab_axes and tuple(old[p].shape) != shape)
    )
    fresh = convert.init_heads(config, sorted({p.split("/")[0] for p in new_heads}), seed) if new_heads else {}
    out: dict[str, np.ndarray] = {}
    resized = []
    for path, shape in shapes.items():
        if path in fresh and path in new_heads:
            out[path] = np.asarray(fresh[path])
            continue
        if path not in old:  # not reached: param_shapes' paths are the checkpoint's or heads
            raise CheckpointError(f"model.init_from: {path} is neither in the checkpoint nor a new head.")
        array = old[path]
        if path in vocab_axes and (vocab_map is not None or array.shape != shape):
            axis = vocab_axes[path]
            array, count = _resize(array, axis, shape[axis], vocab_map, path)
            if count or array.shape != old[path].shape:
                resized.append(f"{path} {old[path].shape}->{array.shape} ({count} new)")
        if array.shape != shape:
            raise CheckpointError(
                f"model.init_from: {path} is {array.shape} in the checkpoint, the model needs {shape}."
            )
        out[path] = array.astype(dtypes[path], copy=False)
    if new_heads:
        print(f"init_from: freshly initialised {convert.listing(new_heads)}", flush=True)
    if resized:
        print(
            f"init_from: vocabulary-sized parameters remapped to the run's tokenizer: {'; '.join(resized)}", flush=True
        )
    return convert.rescan(config, convert.nested(out))
