"""Runs in a subprocess with fake CPU devices (XLA_FLAGS set by the caller before JAX starts).

    python tests/support/multidevice_worker.py layouts                      # 8 devices, one process
    python tests/support/multidevice_worker.py baseline                     # 8 devices, one process, 3 steps
    python tests/support/multidevice_worker.py variants                     # 8 devices: more model shapes
    python tests/support/multidevice_worker.py multihost PORT COUNT INDEX WORKDIR   # one of COUNT processes

Prints one line `RESULT {json}` (process 0 only in multihost mode). Used by
tests/test_sharding.py and tests/test_multihost.py; it trains a small GPT-style model on
fixed synthetic batches through the real runtimes of jaxformer/train/runtime.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

BATCH, LENGTH, VOCAB = 16, 16, 128
MODEL = {
    "preset": "tiny-gpt2",
    "vocab_size": VOCAB,
    "d_model": 64,
    "num_heads": 4,
    "d_ff": 128,
    "max_len": 32,
    "num_layers": 1,
}


def make_experiment(
    mesh: dict[str, int], parallelism: str = "jit", steps: int = 5, model: dict[str, Any] | None = None, **train: Any
) -> Any:
    from jaxformer import experiment

    config = experiment.base_config()
    config.model = model or MODEL
    config.data = {}  # data comes from fixed_batches; DataConfig defaults are enough
    config.train.update(
        dict(steps=steps, batch_size=BATCH, learning_rate=3e-3, schedule="constant", warmup_steps=0, weight_decay=0.01)
    )
    config.train.update(train)
    config.mesh.update(mesh)
    config.parallelism = parallelism
    return experiment.validate(config)


def fixed_batches(steps: int) -> list[dict[str, np.ndarray]]:
    """Next-token batches [BATCH, LENGTH]; the last rows end with padding (weight 0)."""
    rng = np.random.RandomState(0)
    batches = []
    for _ in range(steps):
        tokens = rng.randint(1, VOCAB, size=(BATCH, LENGTH + 1)).astype(np.int32)
        weights = np.ones((BATCH, LENGTH), np.float32)
        for row in range(BATCH // 2, BATCH):
            cut = LENGTH - (row % 5)
            tokens[row, cut:] = 0
            weights[row, cut:] = 0.0
        batches.append({"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights})
    return batches


def run(exp: Any, steps: int, rows: slice = slice(None), runtime_fn: Any = None) -> tuple[list[float], Any, Any]:
    """Train `steps` steps of `exp` on the fixed batches (this process's `rows`); (losses, runtime, state)."""
    import jax

    from jaxformer.train.optim import make_optimizer
    from jaxformer.train.runtime import make_runtime

    tx, schedule = make_optimizer(exp.train, exp.model.d_model)
    runtime = (runtime_fn or make_runtime)(exp, exp.model, tx, schedule)
    state = runtime.init_state(jax.random.PRNGKey(exp.seed))
    losses = []
    for batch in fixed_batches(steps):
        local = {key: value[rows] for key, value in batch.items()}
        state, metrics = runtime.train_step(state, runtime.put_batch(local))
        losses.append(float(metrics["loss"]))
    return losses, runtime, state


def eval_loss(runtime: Any, state: Any, rows: slice = slice(None)) -> float:
    """Eval loss of the first batch cut to 13 rows (padded by put_batch)."""
    batch = {key: value[:13][rows] for key, value in fixed_batches(1)[0].items()}
    sums = runtime.eval_step(state.params, runtime.put_batch(batch))
    return float(sums["loss_sum"]) / float(sums["weight_sum"])


def shard_report(state: Any) -> dict[str, Any]:
    """Per leaf: global shape and the shape of device 0's shard, for params and Adam moments."""
    import jax

    def shapes(tree: Any) -> dict[str, Any]:
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {
            jax.tree_util.keystr(path): [list(leaf.shape), list(leaf.addressable_shards[0].data.shape)]
            for path, leaf in flat
        }

    adam = next(s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu"))
    return {"params": shapes(state.params), "mu": shapes(adam.mu), "nu": shapes(adam.nu)}


def state_bytes(state: Any) -> int:
    from jaxformer import sharding

    return sharding.per_device_bytes((state.params, state.opt_state))


def layouts() -> dict[str, Any]:
    import jax

    from jaxformer.train.runtime import single_device_runtime

    assert jax.device_count() == 8, jax.devices()
    steps = 5
    result: dict[str, Any] = {"losses": {}, "eval": {}}
    one = make_experiment({"data": 1})
    losses, runtime, state = run(one, steps, runtime_fn=lambda e, m, tx, s: single_device_runtime(m, tx, s, e.train))
    result["losses"]["1 device"] = losses
    result["eval"]["1 device"] = eval_loss(runtime, state)
    layouts = {
        "data=8": ({"data": 8}, "jit"),
        "fsdp=8": ({"data": 1, "fsdp": 8}, "jit"),
        "data=2 x fsdp=2 x tensor=2": ({"data": 2, "fsdp": 2, "tensor": 2}, "jit"),
        "pmap 8": ({"data": -1}, "pmap"),
    }
    for name, (mesh, parallelism) in layouts.items():
        losses, runtime, state = run(make_experiment(mesh, parallelism), steps)
        result["losses"][name] = losses
        result["eval"][name] = eval_loss(runtime, state)
        params = runtime.host_params(state)
        leaf = jax.tree.leaves(params)[0]
        result.setdefault("host_params", {})[name] = [len(leaf.devices()), list(leaf.shape)]
        if name in ("data=8", "fsdp=8", "data=2 x fsdp=2 x tensor=2"):
            result.setdefault("shards", {})[name] = shard_report(state)
            result.setdefault("bytes", {})[name] = state_bytes(state)
            # The model's activation constraints, as compiled into the train step.
            program = runtime.train_step.lower(state, runtime.put_batch(fixed_batches(1)[0])).as_text()
            constraints = [line.split("<@mesh, ")[-1] for line in program.splitlines() if "sharding_constraint" in line]
            result.setdefault("constraints", {})[name] = constraints
    result["errors"] = bad_configs()
    return result


def bad_configs() -> dict[str, str]:
    """make_runtime's error message for each bad setting (on the 8 devices of this process)."""
    from jaxformer.train.optim import make_optimizer
    from jaxformer.train.runtime import make_runtime

    cases = {
        "mesh product": make_experiment({"data": 3, "fsdp": 2}),
        "tensor vs heads": make_experiment({"data": 1, "fsdp": 1, "tensor": 8}),
        "batch vs data parallel": make_experiment({"data": 8}, batch_size=12),
        "pmap batch": make_experiment({"data": -1}, "pmap", batch_size=20),
    }
    messages = {}
    for name, exp in cases.items():
        tx, schedule = make_optimizer(exp.train, exp.model.d_model)
        try:
            make_runtime(exp, exp.model, tx, schedule)
            messages[name] = "no error"
        except ValueError as err:
            messages[name] = f"{type(err).__name__}: {err}"
    return messages


def multihost(port: int, count: int, index: int) -> dict[str, Any] | None:
    import tempfile

    import jax

    from jaxformer import distributed
    from jaxformer.config import CheckpointConfig
    from jaxformer.train.checkpoint import Checkpointer

    how = distributed.maybe_initialize(f"127.0.0.1:{port}", count, index)
    per_process = BATCH // count
    rows = slice(index * per_process, (index + 1) * per_process)
    steps = 3
    result: dict[str, Any] = {
        "how": how,
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
    }
    losses, runtime, state = run(make_experiment({"data": 8}, steps=steps), steps, rows)
    result["losses"] = {"data=8": losses}
    result["eval"] = {"data=8": eval_loss(runtime, state, rows=slice(index * 7, (index + 1) * 7))}
    # All processes save together; restoring onto the same shardings gives the same state back.
    workdir = sys.argv[5] if len(sys.argv) > 5 else tempfile.mkdtemp()
    checkpointer = Checkpointer(workdir, CheckpointConfig(keep=1, async_save=False))
    checkpointer.save(steps, state, {"position": steps}, {"note": "multihost test"})
    checkpointer.wait()
    restored = checkpointer.restore(steps, runtime.abstract_state(state))
    checkpointer.close()
    host = runtime.host_params(state)
    back = runtime.host_params(restored.state)
    result["restore_max_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(back), strict=True)
    )
    result["restored_data_state"] = restored.data_state
    pmap_losses, _, _ = run(make_experiment({"data": -1}, "pmap", steps=steps), steps, rows)
    result["losses"]["pmap"] = pmap_losses
    return result if index == 0 else None


# Other shapes of model on data=2 x fsdp=2 x tensor=2: GQA + scanned layers + remat, and an
# MLP width (37) that tensor=2 cannot split (that axis stays whole, the rest is still sharded).
VARIANTS = {
    "tiny-llama GQA, scan_layers, remat": dict(
        preset="tiny-llama", vocab_size=VOCAB, d_model=64, num_heads=4, num_kv_heads=2, d_ff=128, scan_layers=True,
        remat_policy="full",
    ),
    "tiny-gpt2 d_model=36, d_ff=37": dict(preset="tiny-gpt2", vocab_size=VOCAB, d_model=36, num_heads=4, d_ff=37),
}  # fmt: skip


def variants() -> dict[str, Any]:
    from jaxformer.train.runtime import single_device_runtime

    result: dict[str, Any] = {}
    for name, model in VARIANTS.items():
        one = make_experiment({"data": 1}, steps=3, model=model)
        reference, _, _ = run(one, 3, runtime_fn=lambda e, m, tx, s: single_device_runtime(m, tx, s, e.train))
        losses, _, state = run(make_experiment({"data": 2, "fsdp": 2, "tensor": 2}, steps=3, model=model), 3)
        split = sum(not leaf.sharding.is_fully_replicated for leaf in jax_leaves(state.params))
        result[name] = {"1 device": reference, "2x2x2": losses, "split_params": split}
    return result


def jax_leaves(tree: Any) -> list[Any]:
    import jax

    return jax.tree.leaves(tree)


def baseline() -> dict[str, Any]:
    """One process, 8 devices: what the two-process run must reproduce."""
    losses, runtime, state = run(make_experiment({"data": 8}, steps=3), 3)
    pmap_losses, _, _ = run(make_experiment({"data": -1}, "pmap", steps=3), 3)
    return {"losses": {"data=8": losses, "pmap": pmap_losses}, "eval": {"data=8": eval_loss(runtime, state)}}


def main() -> None:
    mode = sys.argv[1]
    if mode == "layouts":
        result: dict[str, Any] | None = layouts()
    elif mode == "baseline":
        result = baseline()
    elif mode == "variants":
        result = variants()
    elif mode == "multihost":
        result = multihost(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
