"""`jaxformer` command line: a thin layer over importable functions.

    jaxformer train --config experiments/default.py --workdir W [--config.train.steps=100 ...]
    jaxformer export --workdir W --out DIR
    jaxformer generate --workdir W --prompt TEXT [--max_new_tokens 64 --method sample --top_p 0.9 ...]
    jaxformer translate --workdir W --text TEXT [--method beam --beam_size 8]   (or --input FILE [--output FILE])
    jaxformer evaluate --workdir W [--split test --method beam --json OUT]      (alias: eval)
    jaxformer demo --workdir W [--host 127.0.0.1 --port 0]                      (needs the [demo] extra)

Errors a user can fix (bad config, missing file, NaN loss, ...) are printed as one line
`error: ...` with exit status 2; set JAXFORMER_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jaxformer.config.search import METHODS, SearchConfig

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    KeyError,
)


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate `--config.a.b=v` / `--config.a.b v` overrides from the other arguments."""
    rest, overrides = [], []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--config."):
            if "=" not in item and i + 1 < len(items) and not items[i + 1].startswith("--"):
                item = f"{item}={items[i + 1]}"
                i += 1
            overrides.append(item[len("--config.") :])
        else:
            rest.append(item)
        i += 1
    return rest, overrides


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from jaxformer import distributed, experiment
    from jaxformer.train.loop import train_and_evaluate
    from jaxformer.train.preemption import Preempted

    distributed.maybe_initialize(args.coordinator_address, args.num_processes, args.process_id)  # before any device use
    exp = experiment.validate(experiment.load(args.config, overrides))
    try:
        metrics = train_and_evaluate(exp, args.workdir)
    except Preempted as stop:  # SIGTERM/SIGINT: the checkpoint is saved; a clean stop, not an error
        if _is_first_process():
            print(stop, flush=True)
        return 0
    if metrics and _is_first_process():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"Finished: {shown}. Workdir: {args.workdir}")
    return 0


def cmd_export(args: argparse.Namespace, overrides: list[str]) -> int:
    from jaxformer.train.checkpoint import export_params

    out, step = export_params(args.workdir, args.out, args.step)
    print(f"Exported the parameters of checkpoint step {step} to {out} (params/ + model_config.json).")
    return 0


def cmd_generate(args: argparse.Namespace, overrides: list[str]) -> int:
    from jaxformer import inference

    run = inference.load_run(args.workdir, args.step)
    outputs = inference.generate(run, args.prompt, _search_of(args))
    for prompt, text in zip(args.prompt, outputs, strict=True):
        print(f"{prompt}{text}" if args.echo else text)
    return 0


def cmd_translate(args: argparse.Namespace, overrides: list[str]) -> int:
    from pathlib import Path

    from jaxformer import inference

    if args.input is not None:
        texts = Path(args.input).read_text(encoding="utf-8").splitlines()
        if not texts:
            raise ValueError(f"input file {args.input} is empty; put one sentence per line.")
    else:
        texts = args.text
    run = inference.load_run(args.workdir, args.step)
    outputs = inference.translate(run, texts, _search_of(args), batch_size=args.batch_size)
    if args.output:
        Path(args.output).write_text("".join(f"{line}\n" for line in outputs), encoding="utf-8")
        print(f"Wrote {len(outputs)} translations to {args.output}.")
    else:
        print("\n".join(outputs))
    return 0


def cmd_evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    import json
    from pathlib import Path

    from jaxformer import inference

    run = inference.load_run(args.workdir, args.step)
    metrics = inference.evaluate(run, args.split, _search_of(args), batch_size=args.batch_size)
    shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"{args.split}: {shown}")
    out = Path(args.json) if args.json else Path(args.workdir) / f"eval_{args.split}_{args.method}.json"
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"Wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace, overrides: list[str]) -> int:
    from jaxformer import demo

    demo.serve(args.workdir, host=args.host, port=args.port, step=args.step)
    return 0


def _is_first_process() -> bool:
    import jax

    return jax.process_index() == 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxformer", description="Train, evaluate and use Transformers in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an experiment (resumes from the workdir's latest checkpoint)")
    train.add_argument("--config", required=True, help="experiment file, e.g. experiments/default.py")
    train.add_argument("--workdir", required=True, help="directory for metrics, TensorBoard events and checkpoints")
    multi = train.add_argument_group("multi-host (every process runs the same command; see README 'Scaling out')")
    multi.add_argument("--coordinator_address", help="HOST:PORT of process 0 (env JAXFORMER_COORDINATOR)")
    multi.add_argument("--num_processes", type=int, help="processes in the run (env JAXFORMER_NUM_PROCESSES)")
    multi.add_argument("--process_id", type=int, help="this process, 0..num_processes-1 (env JAXFORMER_PROCESS_ID)")
    train.set_defaults(handler=cmd_train)
    export = sub.add_parser("export", help="write a params-only inference checkpoint plus model_config.json")
    export.add_argument("--workdir", required=True, help="training workdir (or a checkpoints/ or step directory)")
    export.add_argument("--out", required=True, help="new directory for params/ and model_config.json")
    export.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest intact one)")
    export.set_defaults(handler=cmd_export)
    _add_use_commands(sub)
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="training workdir (config.json, tokenizer/, checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest intact one)")


SEARCH_HELP = {
    "method": "search method",
    "max_new_tokens": "tokens to generate at most (default: 64 for generate, the training target length otherwise)",
    "beam_size": "beams for --method beam",
    "alpha": "GNMT length penalty for --method beam",
    "temperature": "softmax temperature for sampling",
    "top_k": "sample from the k most likely tokens (0: all)",
    "top_p": "nucleus sampling mass in (0, 1] (1: all)",
    "seed": "sampling seed",
}


def _search_arguments(parser: argparse.ArgumentParser, methods: tuple[str, ...], names: Sequence[str]) -> None:
    """--NAME options for these `SearchConfig` fields, their defaults taken from the dataclass."""
    for field in dataclasses.fields(SearchConfig):
        if field.name not in names:
            continue
        help_text = SEARCH_HELP[field.name] + ("" if field.default is None else f" (default {field.default})")
        if field.name == "method":
            parser.add_argument("--method", choices=methods, default=field.default, help=help_text)
        else:
            kind = int if field.name == "max_new_tokens" else type(field.default)
            parser.add_argument(f"--{field.name}", type=kind, default=field.default, help=help_text)


def _search_of(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of the parsed --method/--beam_size/... options (validated once, here)."""
    names = [f.name for f in dataclasses.fields(SearchConfig) if hasattr(args, f.name)]
    return SearchConfig.of(None, **{name: getattr(args, name) for name in names})


def _add_use_commands(sub: Any) -> None:
    generate = sub.add_parser("generate", help="continue a prompt with a decoder-only run")
    _run_arguments(generate)
    generate.add_argument("--prompt", required=True, action="append", help="prompt text (repeat for a batch)")
    _search_arguments(generate, METHODS, [f.name for f in dataclasses.fields(SearchConfig)])
    generate.add_argument("--echo", action="store_true", help="print the prompt before its continuation")
    generate.set_defaults(handler=cmd_generate)

    translate = sub.add_parser("translate", help="translate text with an encoder-decoder run")
    _run_arguments(translate)
    given = translate.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", action="append", help="text to translate (repeat for a batch)")
    given.add_argument("--input", help="file with one text per line")
    translate.add_argument("--output", help="write the translations here, one per line (default: stdout)")
    _search_arguments(translate, ("greedy", "beam"), ("method", "max_new_tokens", "beam_size", "alpha"))
    translate.add_argument("--batch_size", type=int, default=64, help="texts decoded together")
    translate.set_defaults(handler=cmd_translate)

    evaluate = sub.add_parser(
        "evaluate", aliases=["eval"], help="loss/perplexity/accuracy of a split; BLEU and chrF for translation"
    )
    _run_arguments(evaluate)
    evaluate.add_argument("--split", default="test", choices=("train", "validation", "test"), help="default test")
    _search_arguments(evaluate, ("greedy", "beam"), ("method", "beam_size", "alpha"))
    evaluate.add_argument("--batch_size", type=int, default=64, help="sentences decoded together")
    evaluate.add_argument("--json", help="write the metrics here (default: WORKDIR/eval_SPLIT_METHOD.json)")
    evaluate.set_defaults(handler=cmd_evaluate)

    demo = sub.add_parser("demo", help="a Gradio web app for a trained run (pip install 'jaxformer[demo]')")
    _run_arguments(demo)
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    demo.set_defaults(handler=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = _split_overrides(argv)
    parser = build_parser()
    args = parser.parse_args(rest)
    handler: Callable[[argparse.Namespace, list[str]], int] = args.handler
    if overrides and args.command != "train":
        parser.error("--config.* overrides are only accepted by 'train'")
    try:
        return handler(args, overrides)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("JAXFORMER_DEBUG") or not _is_user_error(err):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


def _is_user_error(err: BaseException) -> bool:
    from jaxformer.train.loop import TrainingError

    return isinstance(err, (*USER_ERRORS, TrainingError))


def _one_line(err: Any) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
