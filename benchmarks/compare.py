"""jaxformer vs Hugging Face `transformers` (PyTorch) in one process: training and cached decoding.

    python -m benchmarks.compare [--quick] [--json OUT] [--vocab 50257] [--repeats 5] [--new-tokens 128]
                                 [--parts train decode] [--dtypes float32 bfloat16]
    python -m benchmarks.compare --shape gpt2-124m --json OUT     # on a GPU (the issue's MFU target)

Shape (both sides): GPT-2 layout, 6 layers, width 384, 6 heads, FFN 1536, sequence 256,
batch 8, vocabulary 50257 (`--quick`: 2 layers, sequence 128, batch 4, vocabulary 8192,
32 new tokens, 3 repeats: a smoke run of a few minutes; `--shape gpt2-124m`: GPT-2 small as
released, 12 layers, width 768, 12 heads, sequence 1024, batch 8). Dropout off on both sides.
On a GPU (JAX's default backend "gpu"), torch runs on CUDA too, bf16 training uses cuDNN's
fused attention on the jaxformer side (`attention_impl="cudnn"`; torch's sdpa picks its own
flash kernel), and MFU uses the GPU's published peak (`common.ACCELERATOR_PEAKS`).

* training: jaxformer's `make_train_step` + `optax.adamw` (jitted, state donated; layers
  scanned with `nn.scan`, `--unrolled` for a Python loop of layers) vs
  `GPT2LMHeadModel` + `torch.optim.AdamW` (lr 1e-4, weight decay 0.01 on both), loss in float32
  over all positions. fp32 vs fp32, and bf16 (jaxformer `dtype="bfloat16"`: bf16 compute,
  fp32 params) vs bf16 (`torch.autocast(bfloat16)`, fp32 params).
* decoding: `jaxformer.decoding.generate` (greedy, KV cache, one jitted while_loop; layers
  unrolled, the default config) vs
  `GPT2LMHeadModel.generate(do_sample=False)` (KV cache), fp32, the SAME weights (jaxformer's
  params written with `jaxformer.hf.save`, loaded with `from_pretrained`), a random 16-token
  prompt (`--prompt-len`), batch 1 and 16, all new tokens generated (no EOS). Reports how many
  tokens agree.

Every comparison alternates the two sides' repetitions (A B A B ...) after a warm-up and takes
medians, so background load hits both alike. torch runs at its default thread count and at 1
thread (on a loaded machine its OpenMP regions can be 2-40x slower with 2 threads); the ratio
lines use its faster setting, the JSON keeps both ("ratios_default_threads"). MFU = 6 N T / (step time x peak), with the peak
measured on this machine by a matmul probe (`common.matmul_peak`, best of JAX and torch) or,
on an accelerator, its published dense bf16 peak.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.common import (
    GPT2_124M_SHAPE,
    GPT2_SHAPE,
    accelerator_peak,
    bench_config,
    interleaved,
    jaxformer_trainer,
    machine,
    matmul_peak,
    mfu,
    peak_rss_mib,
    save_json,
    torch_device,
    torch_gpt2,
    torch_thread_counts,
    torch_trainer,
    with_torch_threads,
)
from jaxformer import decoding, models

SHAPES = {"gpt2-6l": GPT2_SHAPE, "gpt2-124m": GPT2_124M_SHAPE}
QUICK = {"layers": 2, "width": 384, "heads": 6, "length": 128, "batch": 4, "vocab": 8192}
PROMPT_LEN = 16
DTYPES = ("float32", "bfloat16")
SHORT = {"float32": "fp32", "bfloat16": "bf16"}


def model_shape(shape: dict[str, int]) -> dict[str, Any]:
    return {k: v for k, v in shape.items() if k != "batch"}


def peer_contenders(fn: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
    """The torch side at each thread count of `torch_thread_counts()`: {"transformers@2": ..., "transformers@1": ...}."""
    return {f"transformers@{n}": with_torch_threads(n, fn) for n in torch_thread_counts()}


def pick_peer(result: dict[str, Any], times: dict[str, dict[str, Any]], key: str) -> None:
    """result["transformers"] = the faster torch thread setting; ratios against it and against the default."""
    peers = {name: t for name, t in times.items() if name.startswith("transformers@")}
    best = min(peers, key=lambda name: peers[name]["median_s"])
    default = next(iter(peers))
    result["transformers"] = dict(result[best], threads=int(best.split("@")[1]))
    result["ratio"] = round(peers[best]["median_s"] / times["jaxformer"]["median_s"], 3)
    result["ratio_default_threads"] = round(peers[default]["median_s"] / times["jaxformer"]["median_s"], 3)
    result["peer_threads"] = {name.split("@")[1]: result.pop(name)[key] for name in peers}


def attention_changes(dtype: str) -> dict[str, str]:
    """Config changes for the attention kernel: cuDNN's fused attention for bf16 on a GPU (it takes
    16-bit inputs only), else the preset's default."""
    return {"attention_impl": "cudnn"} if dtype == "bfloat16" and jax.default_backend() == "gpu" else {}


def compare_training(shape: dict[str, int], dtype: str, repeats: int, scan: bool = True) -> dict[str, Any]:
    """Interleaved train steps of both sides at `dtype`; step times, tokens/s and both losses."""
    config = bench_config(dtype=dtype, scan_layers=scan, **attention_changes(dtype), **model_shape(shape))
    trainer = jaxformer_trainer(config=config, batch=shape["batch"])
    peer = torch_trainer(trainer.config, trainer.state.params, trainer.batch, bf16=dtype == "bfloat16")
    compile_s = trainer.compile()
    contenders = {"jaxformer": trainer.step, **peer_contenders(peer.step)}
    first = [fn() for fn in contenders.values()]  # warm-up; jaxformer and the first torch call see the same weights
    times = interleaved(contenders, repeats)
    tokens = trainer.tokens_per_step
    result: dict[str, Any] = {"dtype": dtype, "tokens_per_step": tokens, "scan_layers": scan}
    result["attention_impl"] = config.attention_impl
    result["torch_device"] = torch_device()
    result["jaxformer_compile_s"] = round(compile_s, 2)
    result["first_loss"] = {"jaxformer": round(first[0], 5), "transformers": round(first[1], 5)}
    for name, t in times.items():
        result[name] = {
            "step_s": round(t["median_s"], 4),
            "tokens_per_s": round(tokens / t["median_s"], 1),
            "cpu_s_per_step": round(t["cpu_s"], 4),
            "times_s": t["times_s"],
        }
    pick_peer(result, times, "step_s")
    return result


def torch_generate(
    model: Any, prompts: np.ndarray, new_tokens: int, sampling: dict[str, Any] | None = None
) -> np.ndarray:
    """`model.generate` with the KV cache: greedy, or sampling with `sampling` = {temperature, top_k, top_p}
    (top_k 0 and top_p 1.0 filter nothing, as in jaxformer)."""
    import torch

    ids = torch.from_numpy(prompts.astype(np.int64)).to(model.device)
    options: dict[str, Any] = {"do_sample": False}
    if sampling is not None:
        options = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, **sampling}
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            use_cache=True,
            pad_token_id=0,
            **options,
        )
    return out[:, prompts.shape[1] :].cpu().numpy()  # waits for the device


def compare_decoding(
    shape: dict[str, int],
    batches: list[int],
    new_tokens: int,
    repeats: int,
    sampling: dict[str, Any] | None = None,
    prompt_len: int = PROMPT_LEN,
) -> list[dict[str, Any]]:
    """Cached decoding, same weights on both sides, fp32; new tokens/s per batch size. Greedy, or sampling
    with `sampling` = {temperature, top_k, top_p} on both sides (then the tokens are not compared)."""
    config = bench_config(**model_shape(shape))
    if prompt_len + new_tokens > config.max_len:
        config = config.replace(max_len=prompt_len + new_tokens)
    params = models.init_params(config, jax.random.PRNGKey(1))
    model = torch_gpt2(config, params).eval()
    options: dict[str, Any] = {"max_new_tokens": new_tokens}
    if sampling is not None:
        options.update(method="sample", seed=0, **sampling)
    rows = []
    for batch in batches:
        prompts = np.random.default_rng(batch).integers(1, config.vocab_size, (batch, prompt_len)).astype(np.int32)
        ours = decoding.generate(config, params, prompts, **options)  # compiles
        theirs = torch_generate(model, prompts, new_tokens, sampling)
        contenders: dict[str, Callable[[], Any]] = {
            "jaxformer": functools.partial(decoding.generate, config, params, prompts, **options),
            **peer_contenders(functools.partial(torch_generate, model, prompts, new_tokens, sampling)),
        }
        times = interleaved(contenders, repeats)
        row: dict[str, Any] = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens}
        row["sampling"] = sampling
        for name, t in times.items():
            row[name] = {
                "seconds": round(t["median_s"], 4),
                "new_tokens_per_s": round(batch * new_tokens / t["median_s"], 1),
                "times_s": t["times_s"],
            }
        pick_peer(row, times, "seconds")
        row["same_tokens"] = round(float(np.mean(ours == theirs)), 4) if sampling is None else None
        rows.append(row)
    return rows


def add_mfu(results: dict[str, Any], shape: dict[str, int], peaks: dict[str, dict[str, float]]) -> None:
    """MFU of each training row, against the measured CPU peak or the accelerator's published one."""
    params = models.param_count(bench_config(**model_shape(shape)))
    results["param_count"] = params
    kind, accel = accelerator_peak()
    for row in results["training"]:
        peak = accel if accel is not None else max(peaks[row["dtype"]].values())
        row["peak_flops"] = peak
        row["peak_source"] = kind if accel is not None else "measured matmul probe (best of JAX and torch)"
        for name in ("jaxformer", "transformers"):
            row[name]["mfu"] = round(mfu(params, row["tokens_per_step"], row[name]["step_s"], peak), 4)


def print_report(results: dict[str, Any]) -> None:
    info, shape = results["machine"], results["shape"]
    print(f"machine: {info['cpu']} ({info['cores']} cores), {info['device']}, load {info['load_average_1m']}")
    print(
        f"shape: {shape['layers']} layers, width {shape['width']}, {shape['heads']} heads, seq {shape['length']}, "
        f"batch {shape['batch']}, vocab {shape['vocab']}; {results['param_count'] / 1e6:.1f}M params"
    )
    for dtype, peak in results["matmul_peak_flops"].items():
        print(
            f"matmul probe {SHORT[dtype]}: JAX {peak['jax'] / 1e9:.0f} GFLOP/s, torch {peak['torch'] / 1e9:.0f} GFLOP/s"
        )
    header = f"{'benchmark':<18} | {'jaxformer':>14} | {'transformers':>14} | {'ratio':>6} | note"
    print(header)
    print("-" * len(header))
    for row in results["training"]:
        j, t = row["jaxformer"], row["transformers"]
        note = (
            f"step {j['step_s']:.3f}s vs {t['step_s']:.3f}s ({t['threads']} thr), MFU {j['mfu']:.1%} vs {t['mfu']:.1%}"
        )
        name = f"train {SHORT[row['dtype']]} tok/s"
        print(f"{name:<18} | {j['tokens_per_s']:>14.1f} | {t['tokens_per_s']:>14.1f} | {row['ratio']:>6.2f} | {note}")
    for row in results["decoding"]:
        j, t = row["jaxformer"], row["transformers"]
        name = f"decode b{row['batch']} tok/s"
        note = f"{row['new_tokens']} new tokens, torch {t['threads']} thr, same tokens {row['same_tokens']:.0%}"
        print(
            f"{name:<18} | {j['new_tokens_per_s']:>14.1f} | {t['new_tokens_per_s']:>14.1f} | {row['ratio']:>6.2f} | {note}"
        )
    for key, value in results["ratios"].items():
        default = results["ratios_default_threads"][key]
        print(f"ratio {key} jaxformer/transformers = {value:.2f}  (torch at its default threads: {default:.2f})")


def run(
    shape: dict[str, int],
    repeats: int,
    new_tokens: int,
    batches: list[int],
    parts: list[str],
    scan: bool = True,
    probe_size: int = 2048,
    dtypes: tuple[str, ...] = DTYPES,
    prompt_len: int = PROMPT_LEN,
) -> dict[str, Any]:
    """The whole comparison as one JSON-ready dict (see the module docstring)."""
    results: dict[str, Any] = {"machine": machine(), "shape": dict(shape), "repeats": repeats, "training": []}
    results["matmul_peak_flops"] = {dtype: matmul_peak(dtype, probe_size) for dtype in dtypes}
    if "train" in parts:
        for dtype in dtypes:
            results["training"].append(compare_training(shape, dtype, repeats, scan))
    results["decoding"] = (
        compare_decoding(shape, batches, new_tokens, repeats, prompt_len=prompt_len) if "decode" in parts else []
    )
    add_mfu(results, shape, results["matmul_peak_flops"])
    ratios = {f"train {SHORT[row['dtype']]}": row["ratio"] for row in results["training"]}
    ratios.update({f"decode b{row['batch']}": row["ratio"] for row in results["decoding"]})
    rows = {
        **{f"train {SHORT[r['dtype']]}": r for r in results["training"]},
        **{f"decode b{r['batch']}": r for r in results["decoding"]},
    }
    results["ratios_default_threads"] = {key: row["ratio_default_threads"] for key, row in rows.items()}
    results["ratios"] = ratios
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    results["finite"] = all(math.isfinite(v) for v in ratios.values())
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shape, few repeats: a few minutes on 2 cores")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-6l", help="model shape (default gpt2-6l)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default 50257; 8192 with --quick)")
    parser.add_argument("--repeats", type=int, help="timed rounds per comparison (default 5; 3 with --quick)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per decode (default 128; 32 with --quick)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="decoding batch sizes")
    parser.add_argument("--prompt-len", type=int, default=PROMPT_LEN, help="prompt tokens per row (default 16)")
    parser.add_argument("--parts", nargs="+", choices=["train", "decode"], default=["train", "decode"])
    parser.add_argument("--unrolled", action="store_true", help="train with scan_layers=False (default: scanned)")
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=DTYPES,
        default=list(DTYPES),
        help="training precisions (float32 alone on CPUs without bf16 instructions, where torch's bf16 matmul "
        "runs at ~1 GFLOP/s and one bf16 step takes minutes)",
    )
    args = parser.parse_args(argv)
    if args.prompt_len < 1:
        parser.error(f"--prompt-len must be at least 1, got {args.prompt_len}")
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        parser.exit(2, f"error: benchmarks.compare needs {' and '.join(missing)}: pip install -e '.[test]'\n")
    shape = dict(QUICK if args.quick else SHAPES[args.shape])
    if args.vocab:
        shape["vocab"] = args.vocab
    repeats = args.repeats or (3 if args.quick else 5)
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    results = run(
        shape,
        repeats,
        new_tokens,
        args.batches,
        args.parts,
        scan=not args.unrolled,
        dtypes=tuple(args.dtypes),
        prompt_len=args.prompt_len,
    )
    print_report(results)
    if args.json:
        print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
