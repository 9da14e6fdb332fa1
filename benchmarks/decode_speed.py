"""Decoding speed: new tokens per second with and without the KV cache.

    python -m benchmarks.decode_speed [--quick] [--batches 1 16] [--prompt-len 16] [--new-tokens 64]

Model: decoder-only, 6 layers, width 384, 6 heads, FFN 1536, vocabulary 8192,
random init, float32, greedy decoding of a random prompt.
  * cache:    `jaxformer.decoding.generate` (one jitted prefill + while_loop, one token per step).
  * no cache: one jitted fori_loop that reruns the full forward pass over the whole
              buffer [B, prompt + new] (padded to that length; causal, so the padding after
              the current token changes nothing) and takes the argmax at the current position.
Both are timed after a warm-up call that compiles them; the table also reports
whether the two produce the same tokens.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import decoding, models
from jaxformer.config import ModelConfig


def bench_config(max_len: int) -> ModelConfig:
    return ModelConfig(
        family="decoder_only",
        vocab_size=8192,
        d_model=384,
        num_heads=6,
        d_ff=1536,
        num_layers=6,
        max_len=max_len,
        activation="gelu",
        position="learned",
    )


@partial(jax.jit, static_argnames=("config", "prompt_len", "new_tokens"))
def greedy_without_cache(params, prompts, *, config, prompt_len, new_tokens):
    """prompts [B, P] -> new tokens [B, N], recomputing the full forward pass for every new token."""
    model = models.build(config)
    batch = prompts.shape[0]
    buffer = jnp.zeros((batch, prompt_len + new_tokens), jnp.int32).at[:, :prompt_len].set(prompts)

    def step(i, buffer):
        logits = model.apply({"params": params}, buffer)  # [B, P + N, V]
        last = jax.lax.dynamic_index_in_dim(logits, prompt_len + i - 1, axis=1, keepdims=False)  # [B, V]
        token = jnp.argmax(last, axis=-1).astype(jnp.int32)
        return jax.lax.dynamic_update_slice(buffer, token[:, None], (0, prompt_len + i))

    buffer = jax.lax.fori_loop(0, new_tokens, step, buffer)
    return buffer[:, prompt_len:]


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    """Best wall time of `repeats` calls (after one warm-up call) and the last output."""
    out = np.asarray(fn())  # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = np.asarray(jax.block_until_ready(fn()))
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 new tokens, 1 timed repeat (a smoke run)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    new_tokens, repeats = (16, 1) if args.quick else (args.new_tokens, args.repeats)

    config = bench_config(max_len=args.prompt_len + new_tokens)
    params = jax.jit(lambda rng: models.init_params(config, rng))(jax.random.PRNGKey(0))
    print(
        f"device: {jax.devices()[0].platform} x{jax.device_count()} | model: {config.num_layers} layers, "
        f"d_model {config.d_model}, {config.num_heads} heads, vocab {config.vocab_size}, "
        f"{models.param_count(config) / 1e6:.1f}M params | prompt {args.prompt_len}, new tokens {new_tokens}"
    )
    header = f"{'batch':>5} | {'cache tok/s':>11} | {'no-cache tok/s':>14} | {'speed-up':>8} | same tokens"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for batch in args.batches:
        prompts = rng.integers(1, config.vocab_size, (batch, args.prompt_len)).astype(np.int32)
        cached_s, cached = timed(lambda: decoding.generate(config, params, prompts, max_new_tokens=new_tokens), repeats)
        full_s, full = timed(
            lambda: greedy_without_cache(
                params, prompts, config=config, prompt_len=args.prompt_len, new_tokens=new_tokens
            ),
            repeats,
        )
        cached_rate, full_rate = batch * new_tokens / cached_s, batch * new_tokens / full_s
        same = f"{np.mean(cached == full):.0%}"
        print(f"{batch:>5} | {cached_rate:>11.1f} | {full_rate:>14.1f} | {cached_rate / full_rate:>7.1f}x | {same}")


if __name__ == "__main__":
    main()
