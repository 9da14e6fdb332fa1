"""What LoRA saves (issue 21, Must show 3): optimizer-state and checkpoint bytes of LoRA vs full fine-tuning
on the GPT-2 small shape, and the train-step time ratio LoRA / full on a smaller shape.

    PYTHONPATH=. python -m benchmarks.lora_memory [--rank 8] [--repeats 5] [--json benchmarks/results/lora_memory_cpu.json]

Bytes: preset gpt2-small (124M parameters), all trees from `jax.eval_shape` (nothing allocated): the
AdamW state of full fine-tuning (`train.optim.make_optimizer` on the params) vs the LoRA state
(`make_lora_optimizer` on {"base": params, "lora": adapters}: the base is frozen, absent from the
state). A LoRA run's checkpoint holds the adapters and their optimizer state (the base is a
reference); a full run's holds all params and theirs. Two target sets: PEFT's usual (query, value)
and every projection (query, key, value, out, up, down).

Time: one jitted AdamW step each, on the same random batch: full (gradients of every parameter) vs
LoRA (gradients of the adapters only; the base enters as a constant). Alternating repetitions,
medians of wall and process-CPU seconds.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.common import bench_config, block, interleaved, lm_batch, machine, save_json
from jaxformer import models, presets
from jaxformer.config import LoraConfig, TrainConfig
from jaxformer.models import lora as lora_lib
from jaxformer.train.optim import make_lora_optimizer, make_optimizer

TARGET_SETS = {"query+value": ("query", "value"), "all projections": ("query", "key", "value", "out", "up", "down")}
TRAIN = TrainConfig(steps=1000, learning_rate=1e-4, warmup_steps=0, weight_decay=0.01)


def tree_bytes(tree: Any) -> int:
    """Bytes of the array leaves of a tree of arrays or ShapeDtypeStructs."""
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def memory(config: Any, rank: int, targets: tuple[str, ...]) -> dict[str, Any]:
    """Parameter, optimizer-state and checkpoint bytes of full fine-tuning vs LoRA (abstract trees only)."""
    params = nn.meta.unbox(models.abstract_params(config))
    lora = LoraConfig(rank=rank, alpha=2.0 * rank, targets=targets)
    adapters = jax.eval_shape(lambda p: lora_lib.init_lora(lora, p, jax.random.PRNGKey(0)), params)
    full_tx, _ = make_optimizer(TRAIN, config.d_model)
    lora_tx, _ = make_lora_optimizer(TRAIN, config.d_model)
    full_opt = jax.eval_shape(full_tx.init, params)
    lora_opt = jax.eval_shape(lora_tx.init, {"base": params, "lora": adapters})
    full = {"params": tree_bytes(params), "opt_state": tree_bytes(full_opt)}
    ours = {"params": tree_bytes(adapters), "opt_state": tree_bytes(lora_opt)}
    full["checkpoint"] = full["params"] + full["opt_state"]
    ours["checkpoint"] = ours["params"] + ours["opt_state"]
    return {
        "targets": list(targets),
        "rank": rank,
        "base_parameters": models.param_count(config),
        "adapter_parameters": lora_lib.count(adapters),
        "full_bytes": full,
        "lora_bytes": ours,
        "ratio_opt_state": ours["opt_state"] / full["opt_state"],
        "ratio_checkpoint": ours["checkpoint"] / full["checkpoint"],
        "ratio_params_saved": ours["params"] / full["params"],
    }


def step_time(shape: dict[str, int], rank: int, targets: tuple[str, ...], repeats: int) -> dict[str, Any]:
    """Median seconds of a full-fine-tuning step and a LoRA step on bench_config(**shape)."""
    config = bench_config(**{k: v for k, v in shape.items() if k != "batch"})
    model = models.build(config)
    params = models.init_params(config, jax.random.PRNGKey(0))
    lora = LoraConfig(rank=rank, alpha=2.0 * rank, targets=targets)
    adapters = lora_lib.init_lora(lora, params, jax.random.PRNGKey(1))
    data = lm_batch(shape["batch"], config.max_len, config.vocab_size)
    tokens, targets_ = jnp.asarray(data["tokens"]), jnp.asarray(data["targets"])

    def loss_of(logits: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets_).mean()

    full_tx, _ = make_optimizer(TRAIN, config.d_model)
    adapter_tx, _ = make_optimizer(TRAIN, config.d_model)  # on the adapters alone (the frozen base has no state)

    @jax.jit
    def full_step(p: Any, opt: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(lambda q: loss_of(model.apply({"params": q}, tokens)))(p)
        updates, opt = full_tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    @jax.jit
    def lora_step(a: Any, opt: Any, base: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(lambda q: loss_of(lora_lib.apply(model, base, q, lora, tokens)))(a)
        updates, opt = adapter_tx.update(grads, opt, a)
        return optax.apply_updates(a, updates), opt, loss

    state = {"full": (params, full_tx.init(params)), "lora": (adapters, adapter_tx.init(adapters))}

    def run_full() -> None:
        p, opt, loss = full_step(*state["full"])
        block(loss)
        state["full"] = (p, opt)

    def run_lora() -> None:
        a, opt, loss = lora_step(*state["lora"], params)
        block(loss)
        state["lora"] = (a, opt)

    run_full(), run_lora()  # compile
    times = interleaved({"full": run_full, "lora": run_lora}, repeats)
    return {
        "shape": shape,
        "parameters": models.param_count(config),
        "full_step_s": times["full"]["median_s"],
        "lora_step_s": times["lora"]["median_s"],
        "full_cpu_s": times["full"]["cpu_s"],
        "lora_cpu_s": times["lora"]["cpu_s"],
        "ratio_wall": times["lora"]["median_s"] / times["full"]["median_s"],
        "ratio_cpu": times["lora"]["cpu_s"] / times["full"]["cpu_s"],
        "times_s": {k: v["times_s"] for k, v in times.items()},
    }


def run(rank: int, time_shape: dict[str, int], repeats: int, preset: str = "gpt2-small") -> dict[str, Any]:
    config = presets.get(preset)
    return {
        "machine": machine(),
        "memory_preset": preset,
        "memory": {name: memory(config, rank, targets) for name, targets in TARGET_SETS.items()},
        "step_time": step_time(time_shape, rank, TARGET_SETS["all projections"], repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument(
        "--json", default=None, help="write the results here (e.g. benchmarks/results/lora_memory_cpu.json)"
    )
    args = parser.parse_args()
    shape = {k: getattr(args, k) for k in ("layers", "width", "heads", "length", "batch", "vocab")}
    results = run(args.rank, shape, args.repeats)
    m = results["machine"]
    print(f"CPU: {m['cpu']} ({m['cores']} cores, load {m['load_average_1m']}), {m['device']}")
    for name, row in results["memory"].items():
        full, ours = row["full_bytes"], row["lora_bytes"]
        print(
            f"{results['memory_preset']} r={row['rank']} {name}: adapters {row['adapter_parameters']:,} of "
            f"{row['base_parameters']:,} params; opt_state {ours['opt_state']:,} vs {full['opt_state']:,} B "
            f"({100 * row['ratio_opt_state']:.2f} %); checkpoint {ours['checkpoint']:,} vs {full['checkpoint']:,} B "
            f"({100 * row['ratio_checkpoint']:.2f} %)"
        )
    t = results["step_time"]
    print(
        f"step time {t['shape']}: full {t['full_step_s']:.3f} s, LoRA {t['lora_step_s']:.3f} s, "
        f"ratio {t['ratio_wall']:.2f} (CPU seconds: {t['ratio_cpu']:.2f})"
    )
    if args.json:
        print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
