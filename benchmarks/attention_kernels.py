"""Fused attention kernels against the reference, on whatever accelerator JAX sees.

    python -m benchmarks.attention_kernels [--json OUT.json]

For each shape (batch, length, heads, kv heads, head size) and mask kind (causal; causal with right
padding), every kernel the backend offers (`config.backend`: reference / xla everywhere, cudnn on
CUDA) runs `layers.attention.dot_product_attention` in bfloat16 on the same random inputs. Reported:
the largest |kernel - reference| over real query rows, relative to the reference's largest value
(the reference in float32 on the same bfloat16 inputs), and the median time of 10 calls after a
compiling warm-up, as a ratio to the reference kernel. On a CPU only reference and xla run; the
cudnn rows are what `benchmarks/gpu_check.sh` records on a GPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine, save_json
from jaxformer.config.backend import attention_kernels, platform
from jaxformer.layers import masks
from jaxformer.layers.attention import dot_product_attention

# (batch, length, heads, kv heads, head size): GPT-2 small, a Llama-shaped GQA layer, a long sequence.
SHAPES = [(8, 1024, 12, 12, 64), (4, 2048, 32, 8, 128), (1, 8192, 16, 16, 128)]
QUICK_SHAPES = [(2, 64, 4, 2, 32)]


def inputs(shape: tuple[int, ...], padded: bool, seed: int = 0) -> tuple[Any, Any, Any, Any, Any]:
    """bfloat16 q [B, T, N, H], k/v [B, T, K, H], the mask [B, 1, T, T] and the valid query rows [B, T]."""
    batch, length, heads, kv_heads, head_dim = shape
    rng = np.random.default_rng(seed)
    q, k, v = (
        jnp.asarray(rng.normal(size=(batch, length, n, head_dim)), jnp.bfloat16) for n in (heads, kv_heads, kv_heads)
    )
    lengths = np.maximum(1, length - rng.integers(0, length // 2 + 1, batch)) if padded else np.full(batch, length)
    valid = jnp.asarray(np.arange(length)[None, :] < lengths[:, None])
    mask = masks.combine(masks.causal_mask(length), masks.key_padding_mask(valid, length))
    return q, k, v, mask, valid


def timed(fn: Any, *args: Any, repeats: int = 10) -> tuple[float, np.ndarray]:
    out = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), np.asarray(out.astype(jnp.float32))


def compare(shape: tuple[int, ...], padded: bool) -> list[dict[str, Any]]:
    q, k, v, mask, valid = inputs(shape, padded)
    reference = jax.jit(lambda q, k, v, m: dot_product_attention(q, k, v, mask=m, implementation="reference"))
    exact = np.asarray(
        dot_product_attention(
            q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask=mask, implementation="reference"
        )
    )
    base_time, _ = timed(reference, q, k, v, mask)
    rows, real = [], np.asarray(valid)
    scale = float(np.abs(exact[real]).max())
    for kernel in attention_kernels(platform()):
        fn = jax.jit(lambda q, k, v, m, kernel=kernel: dot_product_attention(q, k, v, mask=m, implementation=kernel))
        try:
            seconds, out = timed(fn, q, k, v, mask)
        except Exception as err:  # a kernel this device cannot run: recorded, not fatal
            rows.append({"kernel": kernel, "error": " ".join(str(err).split())[:300]})
            continue
        rows.append(
            {
                "kernel": kernel,
                "max_abs_error_vs_fp32_reference": float(np.abs(out - exact)[real].max()),
                "relative_error": float(np.abs(out - exact)[real].max() / scale),
                "median_ms": seconds * 1e3,
                "time_vs_reference": seconds / base_time,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny shape (a smoke run on a CPU)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": machine(), "backend": platform(), "cases": []}
    print(f"{result['machine']['device']}  backend {result['backend']}")
    for shape in QUICK_SHAPES if args.quick else SHAPES:
        for padded in (False, True):
            for row in compare(shape, padded):
                row.update(shape=dict(zip(("batch", "length", "heads", "kv_heads", "head_dim"), shape, strict=True)))
                row["mask"] = "causal + right padding" if padded else "causal"
                result["cases"].append(row)
                shown = row.get("error") or (
                    f"rel err {row['relative_error']:.2e}  {row['median_ms']:8.3f} ms  "
                    f"{row['time_vs_reference']:.2f}x reference time"
                )
                print(f"{shape!s:28s} {row['mask']:24s} {row['kernel']:10s} {shown}")
    if args.json:
        save_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
