"""A training run's weights as Hugging Face files: `jaxformer export --workdir W --hf OUT` / `--peft OUT`.

    params, config = run_params(workdir)        # a LoRA run: its base re-imported, checked, adapters merged
    export_hf(workdir, out)                     # config.json + model.safetensors (+ the checkpoint's tokenizer)
    export_peft(workdir, out)                   # a LoRA run's adapters: adapter_config.json + adapter_model.safetensors

A LoRA run's checkpoints hold the adapters alone plus a reference to the base (train/init_from.py):
the base is rebuilt the way the run built it (`model.init_from` imported again, or initialised from
the run's seed) and must have the fingerprint the checkpoint recorded. A run that started from a HF
checkpoint with that checkpoint's own tokenizer trained on remapped vocabulary rows (hf/finetune.py);
the HF export puts them back in the checkpoint's order and copies its tokenizer files, so the result
loads in `transformers` beside the original tokenizer. The PEFT adapter adapts attention/MLP kernels
only, which no vocabulary touches, so it applies to the original base model as is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxformer import experiment, models
from jaxformer.config import LoraConfig, ModelConfig
from jaxformer.data import tokenizer_store
from jaxformer.data.task_sources import LABELS_FILE
from jaxformer.data.tokenizers import HFTokenizer
from jaxformer.errors import CheckpointError
from jaxformer.hf import convert, finetune, peft
from jaxformer.models import lora as lora_lib
from jaxformer.train import checkpoint as checkpoint_lib
from jaxformer.train import init_from
from jaxformer.train.state import base_rng


@dataclasses.dataclass(frozen=True)
class RunWeights:
    params: Any  # full parameters (a LoRA run: base + adapters merged)
    config: ModelConfig
    step: int | None
    experiment: experiment.Experiment | None  # as the run's checkpoint saved it (None: an export directory)
    lora: LoraConfig | None = None
    adapters: Any = None


def _saved_config(workdir: Path, step: int | None) -> tuple[dict[str, Any], int]:
    source = checkpoint_lib._locate(workdir, step)
    if source.name == "params":
        return {}, -1
    return dict(ocp.JsonCheckpointHandler().restore(source / "config")), int(source.name)


def run_weights(workdir: str | Path, step: int | None = None) -> RunWeights:
    """The run's parameters at `step` (default: newest intact), merged with its base when it trained LoRA."""
    workdir = Path(workdir)
    params, config, found = checkpoint_lib.load_params(workdir, step)
    saved, _ = _saved_config(workdir, found)
    raw = saved.get("experiment")
    exp = experiment.validate(ml_collections.ConfigDict(raw)) if raw else None
    if exp is not None and exp.lora_init_adapter is not None:  # the adapter's own rank and alpha, as in training
        exp = dataclasses.replace(exp, lora=finetune.prepare(exp)[0].lora)
    reference = saved.get(init_from.BASE_KEY) or {}
    if exp is None or exp.lora is None or reference.get("fingerprint") is None:
        return RunWeights(params, config, found, exp)
    base = _base(exp, config)
    current = init_from.fingerprint(base)
    if current != reference["fingerprint"]:
        raise CheckpointError(
            f"the base model {reference.get('init_from') or '(initialised from the seed)'!r} differs from the one "
            f"the LoRA checkpoint in {workdir} was trained on (fingerprint {current[:12]} vs "
            f"{reference['fingerprint'][:12]}); restore that base to export this run."
        )
    merged = lora_lib.merge(base, params, exp.lora)
    return RunWeights(merged, config, found, exp, exp.lora, params)


def _base(exp: experiment.Experiment, config: ModelConfig) -> Any:
    """The base a LoRA run trained on, rebuilt as the run built it (host arrays)."""
    if exp.init_from is None:
        return jax.device_get(models.init_params(config, base_rng(jax.random.PRNGKey(exp.seed))))
    _, start, _ = finetune.prepare(exp)
    assert start is not None  # exp.init_from is set
    return start.params(config)


def _hf_order(weights: RunWeights, workdir: Path) -> tuple[Any, ModelConfig, Path | None]:
    """(params, config, HF source dir) with the vocabulary rows in the HF checkpoint's order when the run
    used that checkpoint's own tokenizer; otherwise the run's own (and no source)."""
    exp = weights.experiment
    if exp is None or exp.init_from is None or not exp.tokenizer_from_init:
        return weights.params, weights.config, None
    source = finetune.locate(exp.init_from, exp.init_revision)
    tokenizer = tokenizer_store.load(workdir)
    if source.kind != "hf" or not isinstance(tokenizer, HFTokenizer):
        return weights.params, weights.config, None
    size = source.config.vocab_size
    theirs = np.arange(size)
    ours = np.where(
        theirs < len(tokenizer.to_ours), tokenizer.to_ours[np.clip(theirs, 0, len(tokenizer.to_ours) - 1)], -1
    )
    config = weights.config.replace(vocab_size=size)
    axes = finetune._vocab_axes(weights.config)
    flat = {k: np.asarray(v) for k, v in convert.flat_params(convert.unscan(jax.device_get(weights.params))).items()}
    for path, axis in axes.items():
        flat[path], _ = finetune._resize(flat[path], axis, size, ours, path)
    return convert.rescan(config.replace(scan_layers=False), convert.nested(flat)), config, source.path


def export_hf(workdir: str | Path, out: str | Path, step: int | None = None) -> tuple[Path, int | None]:
    """Write the run (a LoRA run merged) as a Hugging Face checkpoint of its architecture."""
    workdir = Path(workdir)
    _check_new(out, "--hf")
    weights = run_weights(workdir, step)
    params, config, source = _hf_order(weights, workdir)
    extra: dict[str, Any] = dict(convert.read_special_tokens(source)) if source is not None else {}
    labels = workdir / LABELS_FILE  # a token-classification run's label names (train/loop.py)
    if labels.is_file():
        names = json.loads(labels.read_text())
        extra.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)})
    convert.save(config.replace(scan_layers=False), params, out, tokenizer_dir=source, extra_config=extra)
    return Path(out), weights.step


def export_peft(workdir: str | Path, out: str | Path, step: int | None = None) -> tuple[Path, int | None]:
    """Write a LoRA run's adapters as a PEFT adapter directory for its base (`peft.PeftModel.from_pretrained`)."""
    workdir = Path(workdir)
    _check_new(out, "--peft")
    weights = run_weights(workdir, step)
    if weights.lora is None:
        raise CheckpointError(
            f"{workdir} is not a LoRA run (its checkpoints hold full parameters); export it with --hf, or train "
            "with lora.rank > 0 to get adapters."
        )
    exp = weights.experiment
    vocab_modules = sorted(
        {p.split("/", 1)[0] for p in finetune._vocab_axes(weights.config)} & set(weights.lora.train_modules)
    )
    if vocab_modules and exp is not None and exp.init_from is not None and exp.tokenizer_from_init:
        raise CheckpointError(
            f"lora.train_modules {vocab_modules} hold vocabulary rows re-indexed for jaxformer's special tokens, "
            "which a PEFT directory cannot carry; export the merged model with --hf instead."
        )
    base_name = exp.init_from if exp is not None else None
    peft.save_adapter(weights.config, weights.lora, weights.adapters, out, base_model_name_or_path=base_name)
    return Path(out), weights.step


def _check_new(out: str | Path, flag: str) -> None:
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CheckpointError(f"{flag} {str(path)!r} already exists and is not empty; choose another directory.")
