"""Shared pieces of the peer benchmarks (`compare`, `scaling`, `profile_step`).

* the benchmark shape (GPT-2 layout: 6 layers, width 384, 6 heads, sequence 256, batch 8)
  as a jaxformer `ModelConfig` and as a `transformers` GPT-2 with the same weights;
* `JaxTrainer` / `TorchTrainer`: one AdamW training step each, timed to completion;
* `interleaved`: alternate the contenders' repetitions so machine load hits all alike;
* `matmul_peak`: measured matmul FLOP/s on this machine (JAX and torch), and the
  published dense bf16 peaks of accelerators, for MFU = 6 N T / (step time x peak);
* machine description and JSON output.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxformer import hf, models, presets
from jaxformer.config import ModelConfig
from jaxformer.train.state import init_state
from jaxformer.train.step import make_train_step

GPT2_SHAPE: dict[str, int] = {"layers": 6, "width": 384, "heads": 6, "length": 256, "batch": 8, "vocab": 50257}
# GPT-2 small as released (124M parameters, 1024 positions): the accelerator comparison's shape.
GPT2_124M_SHAPE: dict[str, int] = {"layers": 12, "width": 768, "heads": 12, "length": 1024, "batch": 8, "vocab": 50257}
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.01  # torch.optim.AdamW's default decay, set on both sides

# Published dense bf16 peaks (FLOP/s) by `jax.devices()[0].device_kind` substring.
ACCELERATOR_PEAKS: dict[str, float] = {
    "H100": 989e12,  # SXM
    "H200": 989e12,  # the H100 SXM's compute with more memory
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
}


def bench_config(
    layers: int = 6,
    width: int = 384,
    heads: int = 6,
    length: int = 256,
    vocab: int = 50257,
    dtype: str = "float32",
    **changes: Any,
) -> ModelConfig:
    """GPT-2 layout (learned positions, pre-LayerNorm, gelu_tanh, tied head), dropout off."""
    return presets.get(
        "gpt2-small",
        num_layers=layers,
        d_model=width,
        num_heads=heads,
        d_ff=4 * width,
        vocab_size=vocab,
        max_len=length,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        dtype=dtype,
        **changes,
    )


def lm_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens [B, T] (ids >= 1: no padding), next-token targets, unit weights."""
    tokens = np.random.default_rng(seed).integers(1, vocab, size=(batch, length + 1), dtype=np.int32)
    return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((batch, length), np.float32)}


def block(tree: Any) -> None:
    jax.block_until_ready(tree)


@dataclasses.dataclass
class JaxTrainer:
    """jaxformer's train step (`jaxformer.train.step.make_train_step` + optax.adamw), jitted with the state donated."""

    config: ModelConfig
    batch: dict[str, np.ndarray]
    state: Any
    jitted: Any
    compiled: Any = None
    compile_seconds: float = 0.0
    compiler_options: dict[str, Any] | None = None  # XLA debug options for this step only

    @property
    def tokens_per_step(self) -> int:
        return int(self.batch["weights"].size)

    def compile(self) -> float:
        """Trace, lower and compile the step; returns (and keeps) the seconds it took."""
        start = time.perf_counter()
        self.compiled = self.jitted.lower(self.state, self.batch).compile(compiler_options=self.compiler_options)
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def compiled_text(self) -> str:
        if self.compiled is None:
            self.compile()
        return str(self.compiled.as_text())

    def step(self) -> float:
        """One step, waited for; returns its loss."""
        if self.compiled is None:
            self.compile()
        self.state, metrics = self.compiled(self.state, self.batch)
        return float(metrics["loss"])


def jaxformer_trainer(
    dtype: str = "float32", seed: int = 0, config: ModelConfig | None = None, batch: int = 8, **shape: Any
) -> JaxTrainer:
    """A `JaxTrainer` for `bench_config(**shape)` (or `config`) on a random batch of `batch` rows."""
    config = config or bench_config(dtype=dtype, **shape)
    tx = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    step = make_train_step(models.build(config), config, tx, lambda _: LEARNING_RATE)
    state = init_state(config, tx, jax.random.PRNGKey(seed))
    data = lm_batch(batch, config.max_len, config.vocab_size, seed)
    return JaxTrainer(config, data, state, jax.jit(step, donate_argnums=(0,)))


def torch_device() -> str:
    """Where the torch peer runs: "cuda" when JAX runs on a GPU and torch sees one, else "cpu"."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_gpt2(config: ModelConfig, params: Any) -> Any:
    """`transformers.GPT2LMHeadModel` holding the same weights as jaxformer `params` (via jaxformer.hf.save),
    on `torch_device()`."""
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        hf.save(config.replace(dtype="float32"), params, tmp)
        model = transformers.GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="sdpa")
    return model.to(torch_device())


@dataclasses.dataclass
class TorchTrainer:
    """`transformers` GPT-2 + torch.optim.AdamW; bf16 runs the forward under torch.autocast(bfloat16)."""

    model: Any
    optimizer: Any
    tokens: Any
    targets: Any
    bf16: bool

    @property
    def tokens_per_step(self) -> int:
        return int(self.tokens.numel())

    def step(self) -> float:
        import torch

        with torch.autocast(self.tokens.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(input_ids=self.tokens).logits
        # The loss in float32 over all T positions, like jaxformer's (targets are the next tokens).
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), self.targets.flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # waits for the device


def torch_trainer(config: ModelConfig, params: Any, batch: dict[str, np.ndarray], bf16: bool) -> TorchTrainer:
    import torch

    model = torch_gpt2(config, params).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    device = torch_device()
    tokens = torch.from_numpy(np.asarray(batch["tokens"], np.int64)).to(device)
    targets = torch.from_numpy(np.asarray(batch["targets"], np.int64)).to(device)
    return TorchTrainer(model, optimizer, tokens, targets, bf16)


def torch_thread_counts() -> list[int]:
    """Thread counts to run the torch peer at: its default and, on a multi-core machine, 1.

    On a loaded machine torch's OpenMP regions wait for their slowest thread, and a descheduled
    thread stalls every small op; one thread can then beat the default by 2x (training) to 40x
    (decoding). The peer is measured both ways and compared at its better setting. On a GPU
    only the default is run.
    """
    import torch

    default = torch.get_num_threads()
    return [default, 1] if default > 1 and torch_device() == "cpu" else [default]


def with_torch_threads(threads: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with torch.set_num_threads(threads), the previous setting restored afterwards."""

    def run() -> Any:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(previous)

    return run


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, Any]]:
    """Run each contender once per round, alternating (A B A B ...), `repeats` rounds.

    Returns {name: {"median_s", "min_s", "times_s", "cpu_s"}}: wall seconds per call (median,
    best, all) and the median process CPU seconds per call (less sensitive to other load).
    """
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {
        name: {
            "median_s": statistics.median(walls[name]),
            "min_s": min(walls[name]),
            "times_s": [round(t, 4) for t in walls[name]],
            "cpu_s": statistics.median(cpus[name]),
        }
        for name in contenders
    }


def matmul_peak(dtype: str, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best FLOP/s of a [size, size] x [size, size] matmul in `dtype`, for JAX and for torch (same process)."""
    import torch

    flops = 2.0 * size**3
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    jdt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    a_j, b_j = jnp.asarray(a_np, jdt), jnp.asarray(b_np, jdt)
    matmul = jax.jit(jnp.matmul)
    block(matmul(a_j, b_j))
    tdt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    on_cuda = torch_device() == "cuda"
    a_t, b_t = (torch.from_numpy(m).to("cuda" if on_cuda else "cpu", tdt) for m in (a_np, b_np))

    def torch_matmul() -> None:
        torch.matmul(a_t, b_t)
        if on_cuda:  # wait for the queued product, so the timed call ends when its work does
            torch.cuda.synchronize()

    torch_matmul()
    times = interleaved({"jax": lambda: block(matmul(a_j, b_j)), "torch": torch_matmul}, repeats)
    return {name: flops / t["min_s"] for name, t in times.items()}


def accelerator_peak() -> tuple[str, float | None]:
    """(device kind, published dense bf16 FLOP/s or None on CPU / an unknown device)."""
    kind = jax.devices()[0].device_kind
    for key, peak in ACCELERATOR_PEAKS.items():
        if key.lower() in kind.lower():
            return kind, peak
    return kind, None


def mfu(params: int, tokens_per_step: int, step_seconds: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: 6 N T / (step time x peak) (attention's T^2 term not counted)."""
    return 6.0 * params * tokens_per_step / (step_seconds * peak_flops)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StealMeter:
    """The share of CPU time the hypervisor took from this VM ("steal" in /proc/stat) between the
    meter's creation and `percent()`. On a shared VM it comes and goes, and a benchmark whose rows
    disagree with each other should say how much was taken; None where /proc/stat is absent."""

    def __init__(self) -> None:
        self.begin = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        stat = Path("/proc/stat")
        if not stat.exists():
            return None
        fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:9]]  # user .. steal, in ticks
        return fields[7], sum(fields)

    def percent(self) -> float | None:
        end = self._read()
        if self.begin is None or end is None or end[1] == self.begin[1]:
            return None
        return round(100.0 * (end[0] - self.begin[0]) / (end[1] - self.begin[1]), 2)


MATMUL_ISA_FLAGS = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}


def machine() -> dict[str, Any]:
    """CPU model, core count, load, library versions and the date."""
    import torch
    import transformers

    model, family, number, flags = platform.processor() or "unknown", "?", "?", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        model = fields.get("model name", model)
        family, number, flags = (
            fields.get("cpu family", "?"),
            fields.get("model", "?"),
            set(fields.get("flags", "").split()),
        )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        # "AMD EPYC" covers Zen 2 (family 23, AVX2 only) to Zen 4 (family 25, avx512_bf16): the ratios
        # differ by generation, so the family/model numbers and the matmul ISA go with every result.
        "cpu_family_model": f"{family}/{number}",
        "matmul_isa": sorted(flags & MATMUL_ISA_FLAGS),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}) x{jax.device_count()}",
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_device": torch_device(),
        "transformers": transformers.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def save_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
