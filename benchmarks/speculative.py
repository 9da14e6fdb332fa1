"""Speculative decoding at batch 1: plain greedy vs speculative greedy vs `transformers` assisted generation.

    python -m benchmarks.speculative [--workdir /tmp/jaxformer-speculative] [--data DIR] [--json OUT]
                                     [--steps 1000 1000] [--target 8x512] [--draft_tokens 4]

Trains (once; later runs load the same workdirs) a char-level target and a small draft on
tinyshakespeare with `jaxformer train` (experiments/shakespeare_char.py with a GPT-2 layout and
biases, so both export to `transformers.GPT2LMHeadModel` through jaxformer.hf):

    target  6 layers x 256 wide, 4 heads, block 160      draft  1 layer x 128 wide, 2 heads

then times new tokens/s at batch 1 from a validation-text prompt, interleaved, medians of
`--repeats` runs: jaxformer greedy, jaxformer speculative greedy (k = `--draft_tokens`, its acceptance
rate), `transformers` greedy and `transformers` assisted generation (`generate(assistant_model=...)`,
the same draft with k constant) on the same weights, each torch side at its faster thread setting.
Prints the CPU model and the machine's load (a `machine_loaded` flag when the 1-minute load
average exceeds half the cores: timings are then noisy), and writes benchmarks/results/speculative.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import interleaved, machine, save_json, torch_gpt2, torch_thread_counts, with_torch_threads
from benchmarks.compare import torch_generate
from jaxformer import cli, decoding, inference
from jaxformer.decoding.speculative import speculative_generate

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "speculative.json"
EXPERIMENT = REPO_ROOT / "experiments" / "shakespeare_char.py"

COMMON = (
    "--config.model.use_bias=True",
    "--config.model.dropout_rate=0.0",
    "--config.model.attention_dropout_rate=0.0",
    "--config.train.progress=False",
    "--config.train.num_samples=0",
    "--config.train.eval_every=0",
    "--config.train.log_every=100",
    "--config.train.warmup_steps=50",
)
TARGET = {"num_layers": 6, "d_model": 256, "num_heads": 4, "d_ff": 1024}
DRAFT = {"num_layers": 1, "d_model": 128, "num_heads": 2, "d_ff": 512}
SMOKE_TARGET = {"num_layers": 2, "d_model": 32, "num_heads": 2, "d_ff": 64}
SMOKE_DRAFT = {"num_layers": 1, "d_model": 16, "num_heads": 2, "d_ff": 32}


def train_once(workdir: Path, shape: dict[str, int], data: Path, steps: int, block: int, batch: int) -> inference.Run:
    """The run in `workdir`, trained first with `jaxformer train` unless it already has a checkpoint."""
    if not (workdir / "checkpoints").is_dir():
        overrides = [f"--config.model.{name}={value}" for name, value in shape.items()]
        overrides += [
            f"--config.model.max_len={block + 1}",
            f"--config.data.max_length={block + 1}",
            f"--config.data.train_path={data / 'input.txt'}",
            f"--config.train.steps={steps}",
            f"--config.train.batch_size={batch}",
            f"--config.checkpoint.every={steps}",
            *COMMON,
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["train", "--config", str(EXPERIMENT), "--workdir", str(workdir), *overrides])
        if code != 0:
            raise SystemExit(f"error: training {workdir} failed (exit {code})")
    return inference.load_run(workdir)


def assisted_generate(target: Any, draft: Any, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    """`transformers` assisted greedy generation: `target.generate(assistant_model=draft)`."""
    import torch

    ids = torch.from_numpy(prompts.astype(np.int64))
    with torch.inference_mode():
        out = target.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            assistant_model=draft,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
    return out[:, prompts.shape[1] :].numpy()


def set_assistant_tokens(draft: Any, k: int) -> None:
    """The draft proposes exactly k tokens per round (transformers' default grows/shrinks it and stops early
    below a confidence threshold)."""
    config = draft.generation_config
    config.num_assistant_tokens = k
    config.num_assistant_tokens_schedule = "constant"
    config.assistant_confidence_threshold = 0.0


def best_torch(times: dict[str, dict[str, Any]], prefix: str) -> tuple[str, dict[str, Any]]:
    peers = {name: t for name, t in times.items() if name.startswith(prefix + "@")}
    name = min(peers, key=lambda n: peers[n]["median_s"])
    return name, peers[name]


def run(
    workdir: Path,
    data: Path = DATA,
    steps: tuple[int, int] = (1000, 1000),
    block: int = 160,
    batch: int = 16,
    prompt_chars: int = 24,
    new_tokens: int = 128,
    draft_tokens: int = 4,
    repeats: int = 5,
    smoke: bool = False,
    target_shape: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Train or load the pair, then the interleaved timings (see the module docstring) as a JSON-ready dict.

    `target_shape` replaces the default target's {num_layers, d_model, num_heads, d_ff} (a workdir per shape)."""
    shapes = (SMOKE_TARGET, SMOKE_DRAFT) if smoke else (target_shape or TARGET, DRAFT)
    target_dir = "target" if shapes[0] in (TARGET, SMOKE_TARGET) else "target-" + "-".join(map(str, shapes[0].values()))
    target = train_once(workdir / target_dir, shapes[0], data, steps[0], block, batch)
    draft = train_once(workdir / "draft", shapes[1], data, steps[1], block, batch)
    text = (data / "input.txt").read_text(encoding="utf-8")
    start = int(0.95 * len(text))  # in the validation split (the file's last 10%)
    prompt_text = text[start : start + prompt_chars]
    ids = inference.prompt_ids(target, [prompt_text])[0]
    prompts = np.array([ids], np.int32)
    config, params = target.config, target.params
    plain = functools.partial(decoding.generate, config, params, prompts, max_new_tokens=new_tokens)
    speculative = functools.partial(
        speculative_generate,
        config,
        params,
        draft.config,
        draft.params,
        prompts,
        max_new_tokens=new_tokens,
        draft_tokens=draft_tokens,
    )
    expected = plain()  # compiles
    result = speculative()
    hf_target, hf_draft = torch_gpt2(config, params).eval(), torch_gpt2(draft.config, draft.params).eval()
    set_assistant_tokens(hf_draft, draft_tokens)
    theirs = torch_generate(hf_target, prompts, new_tokens)
    assisted = assisted_generate(hf_target, hf_draft, prompts, new_tokens)
    contenders = {"jaxformer greedy": plain, "jaxformer speculative": speculative}
    for n in torch_thread_counts():
        contenders[f"transformers greedy@{n}"] = with_torch_threads(
            n, functools.partial(torch_generate, hf_target, prompts, new_tokens)
        )
        contenders[f"transformers assisted@{n}"] = with_torch_threads(
            n, functools.partial(assisted_generate, hf_target, hf_draft, prompts, new_tokens)
        )
    times = interleaved(contenders, repeats)
    rows: dict[str, dict[str, Any]] = {}
    for name in ("jaxformer greedy", "jaxformer speculative"):
        rows[name] = {"seconds": times[name]["median_s"], "times_s": times[name]["times_s"]}
    for prefix in ("transformers greedy", "transformers assisted"):
        best, t = best_torch(times, prefix)
        rows[prefix] = {"seconds": t["median_s"], "times_s": t["times_s"], "threads": int(best.split("@")[1])}
    for row in rows.values():
        row["new_tokens_per_s"] = round(new_tokens / row["seconds"], 1)
        row["seconds"] = round(row["seconds"], 4)
    info = machine()
    loaded = info["load_average_1m"] > 0.5 * (info["cores"] or 1)
    seconds = {name: row["seconds"] for name, row in rows.items()}
    return {
        "machine": info,
        "machine_loaded": loaded,
        "smoke": smoke,
        "target": {**shapes[0], "workdir": str(target.workdir), "step": target.step, "max_len": config.max_len},
        "draft": {**shapes[1], "workdir": str(draft.workdir), "step": draft.step},
        "prompt": prompt_text,
        "prompt_tokens": len(ids),
        "new_tokens": new_tokens,
        "draft_tokens": draft_tokens,
        "repeats": repeats,
        "acceptance_rate": round(result.acceptance_rate, 4),
        "rounds": result.rounds,
        "speculative_equals_greedy": bool(np.array_equal(result.tokens, expected)),
        "transformers_greedy_agreement": round(float(np.mean(theirs == expected)), 4),
        "transformers_assisted_agreement": round(float(np.mean(assisted == expected)), 4),
        "rows": rows,
        "ratios": {
            "speculative_vs_greedy": round(seconds["jaxformer greedy"] / seconds["jaxformer speculative"], 3),
            "speculative_vs_transformers_assisted": round(
                seconds["transformers assisted"] / seconds["jaxformer speculative"], 3
            ),
            "greedy_vs_transformers_greedy": round(seconds["transformers greedy"] / seconds["jaxformer greedy"], 3),
            "transformers_assisted_vs_transformers_greedy": round(
                seconds["transformers greedy"] / seconds["transformers assisted"], 3
            ),
        },
    }


def print_report(results: dict[str, Any]) -> None:
    info = results["machine"]
    flag = " (machine loaded: timings noisy)" if results["machine_loaded"] else ""
    print(f"CPU: {info['cpu']}, {info['cores']} cores, load {info['load_average_1m']}{flag}; {info['date']}")
    print(
        f"batch 1, {results['prompt_tokens']}-token prompt, {results['new_tokens']} new tokens, "
        f"k={results['draft_tokens']}, medians of {results['repeats']}"
    )
    for name, row in results["rows"].items():
        threads = f" ({row['threads']} torch threads)" if "threads" in row else ""
        print(f"  {name:24s} {row['new_tokens_per_s']:9.1f} tokens/s  {row['seconds']:.4f} s{threads}")
    print(
        f"acceptance rate {results['acceptance_rate']:.3f} over {results['rounds']} rounds; "
        f"speculative == greedy: {results['speculative_equals_greedy']}"
    )
    print("ratios: " + ", ".join(f"{k} {v}x" for k, v in results["ratios"].items()))


def target_shape_of(text: str) -> dict[str, int]:
    """`--target LAYERSxWIDTH` -> {num_layers, d_model, num_heads = width / 64, d_ff = 4 x width}."""
    layers, _, width = text.partition("x")
    if not (layers.isdigit() and width.isdigit() and int(layers) > 0 and int(width) > 0 and int(width) % 64 == 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAYERSxWIDTH, e.g. 8x512, with WIDTH a multiple of 64")
    return {"num_layers": int(layers), "d_model": int(width), "num_heads": int(width) // 64, "d_ff": 4 * int(width)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/jaxformer-speculative"), help="runs trained here")
    parser.add_argument("--data", type=Path, default=DATA, help="directory holding tinyshakespeare's input.txt")
    parser.add_argument("--steps", type=int, nargs=2, default=[1000, 1000], help="training steps: target, draft")
    parser.add_argument("--block", type=int, default=160, help="training block (model max_len = block + 1)")
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--draft_tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--target",
        type=target_shape_of,
        metavar="LAYERSxWIDTH",
        help="target shape instead of 6x256, e.g. 8x512 (heads = width / 64, feed-forward 4 x width)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    if not (args.data / "input.txt").is_file():
        parser.exit(2, f"error: {args.data / 'input.txt'} not found; pass --data DIR (tinyshakespeare's input.txt)\n")
    results = run(
        args.workdir,
        args.data,
        tuple(args.steps),
        target_shape=args.target,
        block=args.block,
        batch=args.batch,
        new_tokens=args.new_tokens,
        draft_tokens=args.draft_tokens,
        repeats=args.repeats,
    )
    results["command"] = "python -m benchmarks.speculative " + " ".join(argv if argv is not None else sys.argv[1:])
    print_report(results)
    print(f"wrote {save_json(args.json, results)}")


if __name__ == "__main__":
    main()
