"""A run's first parameters when they are not freshly initialised: the `Start` the loop and runtime consume.

`model.init_from` (a Hugging Face checkpoint or another jaxformer workdir) is read by
`jaxformer.hf.finetune.prepare`, one floor up (it needs the HF mapping tables); what it hands down
is a `Start`: the parameters of the run's model config (called only when a fresh state is built,
never when the run resumes from its own checkpoint) and the reference saved with every checkpoint.

A LoRA run keeps its base weights out of the train state (and so out of its checkpoints): the
state's params are the adapters alone, and the base is re-imported on resume, then compared with
the `fingerprint` its checkpoints recorded (`check_base`): a changed base is one clear error, never
adapters silently applied to other weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict

from jaxformer.config import ModelConfig
from jaxformer.errors import CheckpointError

BASE_KEY = "base"  # the checkpoints' config item: {"experiment": ..., "model": ..., "base": reference}


@dataclasses.dataclass
class Start:
    """Where the first parameters come from. `params(model_config)`: host arrays in that config's layout."""

    source: str  # model.init_from as given ("" for a LoRA base freshly initialised from the seed)
    params: Callable[[ModelConfig], Any]
    revision: str | None = None
    adapters: Any = None  # a LoRA run's first adapters (lora.init_adapter), in the model's layout; None: fresh

    def reference(self, fingerprint: str | None) -> dict[str, Any]:
        return {"init_from": self.source, "init_revision": self.revision, "fingerprint": fingerprint}


def fingerprint(params: Any) -> str:
    """sha256 over every leaf's path, shape, dtype and bytes (host order): equal iff the weights are equal."""
    digest = hashlib.sha256()
    flat = flatten_dict(nn.meta.unbox(dict(params)))
    for path in sorted(flat):
        leaf = np.ascontiguousarray(jax.device_get(flat[path]))
        header = json.dumps(["/".join(map(str, path)), list(leaf.shape), str(leaf.dtype)])
        digest.update(header.encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def check_base(saved_config: Any, current: dict[str, Any] | None, where: str) -> None:
    """Raise CheckpointError unless the base recorded in a checkpoint's config is the base loaded now."""
    saved = saved_config.get(BASE_KEY) if isinstance(saved_config, dict) else None
    if current is None or current.get("fingerprint") is None:
        return
    if saved is None or saved.get("fingerprint") is None:
        raise CheckpointError(
            f"{where} records no base model, but this run trains LoRA adapters on one; the checkpoint holds full "
            "parameters: resume it without lora.* (lora.rank=0) or use a new --workdir."
        )
    if saved["fingerprint"] != current["fingerprint"]:
        raise CheckpointError(
            f"the base model {current.get('init_from') or '(initialised from the seed)'!r} differs from the one "
            f"{where} was trained on (fingerprint {current['fingerprint'][:12]} vs {saved['fingerprint'][:12]}, "
            f"recorded init_from {saved.get('init_from')!r}); restore that base or use a new --workdir."
        )
