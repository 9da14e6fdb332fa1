"""`jaxformer` command line: a thin layer over importable functions.

    jaxformer train --config experiments/default.py --workdir W [--config.train.steps=100 ...]

Errors a user can fix (bad config, missing file, NaN loss, ...) are printed as one line
`error: ...` with exit status 2; set JAXFORMER_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

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
            if "=" not in item and i + 1 < len(items):
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
    return parser


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
