"""Runs in a subprocess with 8 fake CPU devices: the issue-19 layer features trained on three layouts.

    python tests/support/llm_sharded_worker.py

A decoder with every feature on (llama3 RoPE scaling, Qwen2 q/k/v biases, Qwen3 q/k RMSNorm with
head_dim != d_model / N, a Mistral sliding window shorter than the sequence), scanned with the window in
one layer only (per-layer windows go through the scan as data) and unrolled with it in every layer:
3 adamw steps on the fixed batches of multidevice_worker.py on 1 device, fsdp=8 and data=2 x fsdp=2 x tensor=2 (jit sharding).
Prints one line `RESULT {json}`: losses per model and layout, and per parameter whether it was split.
"""

from __future__ import annotations

import json
from typing import Any

from support.multidevice_worker import LENGTH, VOCAB, make_experiment, run

STEPS = 3
# Every feature at once, sizes that fsdp=8 (D = 48) and tensor=2 (N, K, F, V even) really split.
FEATURES = dict(
    preset="tiny-llama", vocab_size=VOCAB, d_model=48, num_heads=4, num_kv_heads=2, head_dim=10, d_ff=40,
    rope_scaling="llama3", rope_factor=4.0, rope_original_max_len=8, rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0, rotary_base=500.0, qkv_bias=True, qk_norm=True, sliding_window=5,
)  # fmt: skip
MODELS: dict[str, dict[str, Any]] = {
    "scanned, window in layer 0 only": dict(FEATURES, scan_layers=True, sliding_window_layers=(0,)),
    "unrolled, window in every layer": dict(FEATURES, scan_layers=False),
}
LAYOUTS = {"fsdp=8": {"data": 1, "fsdp": 8}, "data=2 x fsdp=2 x tensor=2": {"data": 2, "fsdp": 2, "tensor": 2}}


def main() -> dict[str, Any]:
    import jax

    from jaxformer.train.runtime import single_device_runtime

    assert jax.device_count() == 8, jax.devices()
    assert FEATURES["sliding_window"] < LENGTH
    result: dict[str, Any] = {}
    for name, model in MODELS.items():
        one = make_experiment({"data": 1}, steps=STEPS, model=model)
        reference, _, _ = run(one, STEPS, runtime_fn=lambda e, m, tx, s: single_device_runtime(m, tx, s, e.train))
        entry: dict[str, Any] = {"1 device": reference, "split": {}}
        for layout, mesh in LAYOUTS.items():
            losses, _, state = run(make_experiment(mesh, steps=STEPS, model=model), STEPS)
            entry[layout] = losses
            flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
            entry["split"][layout] = {
                jax.tree_util.keystr(path): not leaf.sharding.is_fully_replicated for path, leaf in flat
            }
        result[name] = entry
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()), flush=True)
