"""Input pipeline throughput vs what a training step consumes, on Multi30k (en -> de).

    python -m benchmarks.input_pipeline [--batch-size 64] [--length 128] [--steps 5]

Measures (1) examples/s the packed Multi30k pipeline produces (SentencePiece 8000, rows of
`--length` tokens, synchronous, no prefetch: the pure cost of building batches) and (2)
examples/s a jitted forward + backward pass of the Multi30k model consumes on those batches
(`jax.value_and_grad` of the token cross-entropy; no optimizer, so this is an upper bound on
step speed and a conservative ratio). Prints both and their ratio, which should be >= 10.
Data: ../shared/data/multi30k beside the repository (or --data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import models, presets
from jaxformer.data import DataConfig, build_pipeline

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def multi30k_config(data: Path, length: int) -> DataConfig:
    return DataConfig(
        source="parallel",
        task="seq2seq",
        train_path=str(data / "train"),
        eval_path=str(data / "val"),
        source_suffix=".en",
        target_suffix=".de",
        tokenizer="sentencepiece",
        vocab_size=8000,
        max_source_length=length,
        max_target_length=length,
        pack=True,
        prefetch=0,
    )


def examples_in(batch: dict[str, np.ndarray]) -> int:
    """Number of packed examples (segments) in a batch."""
    return int(batch["target_segment_ids"].max(axis=1).sum())


def input_throughput(pipeline: Any, batches: int) -> tuple[float, float]:
    """(examples/s, seconds per batch) of building `batches` training batches."""
    iterator = pipeline.train_batches()
    next(iterator)  # warm caches (epoch permutation)
    start = time.perf_counter()
    count = sum(examples_in(next(iterator)) for _ in range(batches))
    seconds = time.perf_counter() - start
    return count / seconds, seconds / batches


def loss_fn(model: Any, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
    """Mean token cross-entropy of a packed encoder-decoder batch."""
    logits = model.apply(
        {"params": params},
        batch["source"],
        batch["target_in"],
        source_valid=batch["source_segment_ids"] > 0,
        target_valid=batch["target_segment_ids"] > 0,
        source_positions=batch["source_positions"],
        target_positions=batch["target_positions"],
        source_segment_ids=batch["source_segment_ids"],
        target_segment_ids=batch["target_segment_ids"],
    )
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    token_loss = -jnp.take_along_axis(log_probs, batch["targets"][..., None], axis=-1)[..., 0]
    return (token_loss * batch["weights"]).sum() / jnp.maximum(batch["weights"].sum(), 1.0)


def step_throughput(model_config: Any, batch: dict[str, np.ndarray], steps: int) -> tuple[float, float, float]:
    """(examples/s consumed, median seconds per step, compile seconds) of a jitted forward+backward."""
    model = models.build(model_config)
    params = models.init_params(model_config, jax.random.PRNGKey(0))
    step = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(model, p, b)))
    device_batch = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()})
    start = time.perf_counter()
    jax.block_until_ready(step(params, device_batch))
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(step(params, device_batch))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return examples_in(batch) / seconds, seconds, compile_seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with {train,val}.{en,de}.gz")
    parser.add_argument("--workdir", default=None, help="where the SentencePiece model is cached (default: a temp dir)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch")
    parser.add_argument("--length", type=int, default=128, help="source and target row length (tokens)")
    parser.add_argument("--input-batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one compile)")
    parser.add_argument("--preset", default="transformer-base")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"Multi30k not found at {args.data}; pass --data DIR.")

    workdir = args.workdir or tempfile.mkdtemp(prefix="jaxformer-bench-")
    start = time.perf_counter()
    pipeline = build_pipeline(
        multi30k_config(args.data, args.length),
        family="encoder_decoder",
        batch_size=args.batch_size,
        seed=0,
        workdir=workdir,
    )
    build_seconds = time.perf_counter() - start
    input_rate, seconds_per_batch = input_throughput(pipeline, args.input_batches)
    batch = next(pipeline.train_batches())
    pipeline.close()
    model_config = presets.get(
        args.preset,
        vocab_size=pipeline.vocab_size,
        d_model=args.d_model,
        num_heads=args.heads,
        d_ff=args.d_ff,
        num_layers=args.layers,
        max_len=max(args.length, 128),
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    step_rate, step_seconds, compile_seconds = step_throughput(model_config, batch, args.steps)
    results = {
        "device": str(jax.devices()[0].device_kind),
        "batch_rows": args.batch_size,
        "row_length": args.length,
        "examples_per_batch": examples_in(batch),
        "pipeline_build_seconds": round(build_seconds, 2),
        "input_examples_per_second": round(input_rate, 1),
        "input_seconds_per_batch": round(seconds_per_batch, 5),
        "model": f"{args.preset} d_model={args.d_model} heads={args.heads} d_ff={args.d_ff} layers={args.layers}+{args.layers}",
        "model_parameters": models.param_count(model_config),
        "train_step_seconds": round(step_seconds, 4),
        "train_step_compile_seconds": round(compile_seconds, 1),
        "train_examples_per_second": round(step_rate, 1),
        "ratio_input_to_train": round(input_rate / step_rate, 1),
    }
    for key, value in results.items():
        print(f"{key:>28}: {value}")
    verdict = "OK" if results["ratio_input_to_train"] >= 10 else "TOO SLOW"
    print(
        f"input pipeline is {results['ratio_input_to_train']}x faster than the step consumes ({verdict}; need >= 10x)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
