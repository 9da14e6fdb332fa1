"""Loading a sharded safetensors checkpoint: jaxformer onto fsdp=8 (fake CPU devices) vs transformers.

    python -m benchmarks.load_speed [--size-mb 600] [--repeats 2] [--out benchmarks/results/load_speed_cpu.json]

Writes a random float32 Llama checkpoint of about --size-mb as sharded safetensors + index (in a
temporary directory; tensor names and shapes from `transformers` built on the meta device), then
loads it, each load in a fresh subprocess, alternating the two sides --repeats times:

* jaxformer: `hf.load(DIR, mesh=fsdp=8)` with XLA_FLAGS=--xla_force_host_platform_device_count=8
  (every parameter straight into its NamedSharding, tensor by tensor), arrays blocked until ready;
* transformers: `AutoModelForCausalLM.from_pretrained(DIR, dtype=torch.float32)`.

Each child reports peak RSS (VmHWM of /proc/self/status) minus its RSS right before the load (after
imports and, for JAX, after the 8 devices exist): the memory the load itself added. transformers keeps
safetensors weights memory-mapped, so its pages become resident only when read; its child also
reports the peak after reading every weight once. On fake CPU
devices the "device" memory is host memory, so the loaded parameters themselves count once (the
ideal is a ratio of 1.0 to the checkpoint size; a second full host copy would show as ~2.0). The
page cache is warm for both sides (the file was just written). Prints the CPU model; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "load_speed_cpu.json"
FAST_CPU_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


# The checkpoint -------------------------------------------------------------------------------


def llama_shape(size_mb: float) -> dict[str, Any]:
    """HF LlamaConfig values: width 1024 (8 | D for fsdp=8), GQA 16/4, layers added until ~size_mb of float32."""
    width, ff, vocab = (1024, 2816, 32000) if size_mb >= 50 else (128, 352, 2048)
    heads, kv = (16, 4) if width >= 1024 else (4, 2)
    head = width // heads
    per_layer = 4 * (2 * width * width + 2 * width * kv * head + 3 * width * ff + 2 * width)
    fixed = 4 * (2 * vocab * width + width)
    layers = max(1, round((size_mb * 1e6 - fixed) / per_layer))
    return dict(
        vocab_size=vocab, hidden_size=width, intermediate_size=ff, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
        tie_word_embeddings=False, rms_norm_eps=1e-5,
    )  # fmt: skip


def write_checkpoint(directory: Path, size_mb: float, shard_mb: float) -> dict[str, Any]:
    """Random float32 weights under transformers' names, written shard by shard (never all in memory)."""
    import torch
    import transformers

    from jaxformer.hf import files

    values = llama_shape(size_mb)
    config = transformers.LlamaConfig(**values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    del model
    rng = np.random.default_rng(0)
    groups: list[list[str]] = [[]]
    used = 0
    for name, shape in shapes.items():
        nbytes = 4 * int(np.prod(shape))
        if groups[-1] and used + nbytes > shard_mb * 1e6:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += nbytes
    weight_map, total = {}, 0
    directory.mkdir(parents=True, exist_ok=True)
    for index, names in enumerate(groups, start=1):
        shard = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (rng.standard_normal(shapes[n], dtype=np.float32) * 0.02) for n in names}
        files.write_safetensors(directory / shard, tensors, metadata={"format": "pt"})
        total += sum(t.nbytes for t in tensors.values())
        weight_map.update(dict.fromkeys(names, shard))
        del tensors
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / files.SAFETENSORS_INDEX).write_text(json.dumps(index_json, indent=2))
    hf_config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **values}
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    return {"bytes": total, "shards": len(groups), "tensors": len(shapes), "config": values}


# The children (fresh processes) ---------------------------------------------------------------


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_jaxformer(directory: str) -> dict[str, Any]:
    import jax

    from jaxformer import hf, sharding

    mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    jax.block_until_ready(jax.device_put(np.zeros(8, np.float32), sharding.replicated(mesh)))  # devices up
    before = rss_kib("VmRSS")
    began = time.perf_counter()
    _, params, _ = hf.load(directory, mesh=mesh)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - began
    leaves = jax.tree.leaves(params)
    return {
        "seconds": seconds,
        "rss_before_kib": before,
        "peak_kib": rss_kib("VmHWM"),
        "devices": jax.device_count(),
        "param_bytes": int(sum(leaf.nbytes for leaf in leaves)),
        "device0_bytes": sharding.per_device_bytes(params),
        "split_params": sum(not leaf.sharding.is_fully_replicated for leaf in leaves),
        "params": len(leaves),
    }


def child_transformers(directory: str) -> dict[str, Any]:
    import torch
    import transformers

    before = rss_kib("VmRSS")
    began = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    seconds = time.perf_counter() - began
    peak = rss_kib("VmHWM")
    with torch.no_grad():  # weights may still be memory-mapped from the file: read every one once
        checksum = float(sum(float(p.sum()) for p in model.parameters()))  # no copy of a weight
    return {
        "seconds": seconds,
        "rss_before_kib": before,
        "peak_kib": peak,
        "peak_after_reading_every_weight_kib": rss_kib("VmHWM"),
        "checksum_finite": bool(np.isfinite(checksum)),
        "param_bytes": int(sum(p.numel() * p.element_size() for p in model.parameters())),
        "torch_threads": torch.get_num_threads(),
    }


def run_child(side: str, directory: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("HF_HUB_OFFLINE", "1")
    if side == "jaxformer":
        env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_CPU_FLAGS}", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "benchmarks.load_speed", "--child", side, str(directory)]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{side} child failed (rc={done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# The comparison -------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], checkpoint_bytes: int) -> dict[str, Any]:
    seconds = statistics.median(r["seconds"] for r in runs)
    added = max(r["peak_kib"] - r["rss_before_kib"] for r in runs) * 1024
    out = {
        "seconds": seconds,
        "seconds_per_gb": seconds / (checkpoint_bytes / 1e9),
        "peak_added_bytes": added,
        "peak_rss_over_checkpoint": added / checkpoint_bytes,
        "runs": runs,
    }
    if "peak_after_reading_every_weight_kib" in runs[0]:  # transformers: mmap-backed weights, once resident
        touched = max(r["peak_after_reading_every_weight_kib"] - r["rss_before_kib"] for r in runs) * 1024
        out["peak_rss_over_checkpoint_after_reading_every_weight"] = touched / checkpoint_bytes
    return out


def run(size_mb: float = 600, repeats: int = 2, shard_mb: float | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="jaxformer_load_speed_") as tmp:
        directory = Path(tmp) / "ckpt"
        checkpoint = write_checkpoint(directory, size_mb, shard_mb or max(size_mb / 6, 0.5))
        runs: dict[str, list[dict[str, Any]]] = {"jaxformer": [], "transformers": []}
        for _ in range(repeats):  # alternate, so machine load hits both alike
            for side in runs:
                runs[side].append(run_child(side, directory))
    sides = {side: summarise(r, checkpoint["bytes"]) for side, r in runs.items()}
    for side, summary in sides.items():
        loaded = {r["param_bytes"] for r in summary["runs"]}
        if loaded != {checkpoint["bytes"]}:
            raise RuntimeError(
                f"{side} loaded {loaded} bytes of parameters, the checkpoint holds {checkpoint['bytes']}"
            )
    from benchmarks.common import machine

    return {
        "machine": machine(),
        "checkpoint": checkpoint,
        "repeats": repeats,
        **sides,
        "ratios": {
            "peak_rss_over_checkpoint (jaxformer / transformers)": sides["jaxformer"]["peak_rss_over_checkpoint"]
            / sides["transformers"]["peak_rss_over_checkpoint"],
            "seconds (jaxformer / transformers)": sides["jaxformer"]["seconds"] / sides["transformers"]["seconds"],
        },
    }


def print_report(results: dict[str, Any]) -> None:
    ckpt = results["checkpoint"]
    print(f"CPU: {results['machine']['cpu']} ({results['machine']['cores']} cores)")
    print(f"checkpoint: {ckpt['bytes'] / 1e6:.0f} MB float32 in {ckpt['shards']} shards, {ckpt['tensors']} tensors")
    for side in ("jaxformer", "transformers"):
        s = results[side]
        print(
            f"{side:>12}: {s['seconds']:.2f} s ({s['seconds_per_gb']:.2f} s/GB), "
            f"peak RSS added {s['peak_added_bytes'] / 1e6:.0f} MB = {s['peak_rss_over_checkpoint']:.2f} x checkpoint"
        )
    touched = results["transformers"].get("peak_rss_over_checkpoint_after_reading_every_weight")
    if touched is not None:
        print(f"transformers, after reading every weight once (mmap pages resident): {touched:.2f} x checkpoint")
    runs = results["jaxformer"]["runs"][0]
    print(f"jaxformer: {runs['split_params']}/{runs['params']} params split over {runs['devices']} devices")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=600.0, help="checkpoint size to write (float32)")
    parser.add_argument("--shard-mb", type=float, default=None, help="safetensors shard size (default size/6)")
    parser.add_argument("--repeats", type=int, default=2, help="loads per side (alternating)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results path")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        side, directory = args.child
        result = child_jaxformer(directory) if side == "jaxformer" else child_transformers(directory)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.size_mb <= 0 or args.repeats < 1:
        print("--size-mb must be > 0 and --repeats >= 1.", file=sys.stderr)
        return 2
    results = run(args.size_mb, args.repeats, args.shard_mb)
    print_report(results)
    from benchmarks.common import save_json

    print(f"wrote {save_json(args.out, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
