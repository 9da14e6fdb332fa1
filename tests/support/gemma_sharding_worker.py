"""Runs in a subprocess with 8 fake CPU devices: tiny Gemma 2 / Gemma 3 trained on one device and under
jit sharding (fsdp=8; fsdp=4 x tensor=2) on the fixed batches of multidevice_worker. Prints `RESULT {json}`.

    python tests/support/gemma_sharding_worker.py
"""

from __future__ import annotations

import json
from typing import Any

from support.multidevice_worker import VOCAB, jax_leaves, make_experiment, run

STEPS = 3
SIZES = dict(vocab_size=VOCAB, d_model=64, num_heads=4, num_kv_heads=2, head_dim=16, d_ff=128, max_len=32)
MODELS = {  # windows of 5 slots, shorter than the 16-token batches
    "tiny-gemma2": dict(preset="tiny-gemma2", **SIZES),
    "tiny-gemma3 scanned": dict(preset="tiny-gemma3", scan_layers=True, **SIZES),
}
LAYOUTS = {"fsdp=8": {"data": 1, "fsdp": 8}, "fsdp=4 x tensor=2": {"data": 1, "fsdp": 4, "tensor": 2}}


def main() -> dict[str, Any]:
    import jax

    from jaxformer.train.runtime import single_device_runtime

    assert jax.device_count() == 8, jax.devices()
    result: dict[str, Any] = {}
    for name, model in MODELS.items():
        one = make_experiment({"data": 1}, steps=STEPS, model=model)
        losses, _, _ = run(one, STEPS, runtime_fn=lambda e, m, tx, s: single_device_runtime(m, tx, s, e.train))
        runs: dict[str, Any] = {"1 device": losses}
        for layout, mesh in LAYOUTS.items():
            losses, _, state = run(make_experiment(mesh, steps=STEPS, model=model), STEPS)
            split = sum(not leaf.sharding.is_fully_replicated for leaf in jax_leaves(state.params))
            runs[layout] = losses
            runs[f"{layout} split params"] = split
        runs["params"] = len(jax_leaves(state.params))
        result[name] = runs
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()), flush=True)
