"""`jaxformer` command line: a thin layer over importable functions.

    jaxformer train --config experiments/default.py --workdir W [--config.train.steps=100 ...]
    jaxformer export --workdir W --out DIR   (or --hf DIR: a Hugging Face checkpoint; --peft DIR: LoRA adapters)
    jaxformer generate --workdir W --prompt TEXT [--max_new_tokens 64 --method sample --top_p 0.9 ...]
    jaxformer generate --model DIR_OR_REPO [--revision R] --prompt TEXT   (or --chat MESSAGE: its chat template)
    jaxformer generate --workdir W --prompt TEXT --draft DRAFT_WORKDIR_OR_DIR [--draft_tokens 4]   (speculative)
    jaxformer translate --workdir W --text TEXT [--method beam --beam_size 8]   (or --input FILE [--output FILE])
    jaxformer evaluate --workdir W [--split test --method beam --json OUT]      (alias: eval)
    jaxformer demo --workdir W [--host 127.0.0.1 --port 0]                      (needs the [demo] extra)
    jaxformer answer --model DIR --question Q --context C [--max_answer_length 30 --top_k 1 --json]
    jaxformer classify --model DIR --text TEXT [--json]   /   jaxformer tag --model DIR --text TEXT [--json]
translate, evaluate and demo take --model DIR_OR_REPO (a Hugging Face checkpoint) instead of --workdir too;
    jaxformer evaluate --model DIR_OR_REPO --input FILE [--json OUT]   (one text per line, or source<TAB>reference)

Errors a user can fix (a `jaxformer.errors.UserError`: bad config, bad input, unusable data or
checkpoint, unresolvable Hub id, a kernel the backend lacks, NaN loss; or an OS error on a path
such as a missing file) are printed as one line `error: ...` with exit status 2. Anything else is
a bug in jaxformer: its traceback is printed, then one line saying so and where to report it, with
exit status 1. Set JAXFORMER_DEBUG=1 to let every error propagate with its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jax

from jaxformer import demo, distributed, drafting, encoder_tasks, experiment, inference
from jaxformer import outputs as outputs_io
from jaxformer.config.search import METHODS, SearchConfig
from jaxformer.errors import REPORT_BUG, InputError, UserError, describe_os_error, is_path_os_error
from jaxformer.hf import finetune, run_export
from jaxformer.train.checkpoint import export_params
from jaxformer.train.loop import train_and_evaluate
from jaxformer.train.preemption import Preempted, StartupGuard, StoppedBeforeStart

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_DRAFT_TOKENS = 4  # generate --draft: tokens proposed per round


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
    guard = StartupGuard()  # a signal before the first step: nothing to save, a clean stop
    try:
        with guard:
            distributed.maybe_initialize(  # before any device use
                args.coordinator_address,
                args.num_processes,
                args.process_id,
                timeout_s=distributed.DEFAULT_TIMEOUT_S
                if args.coordinator_timeout is None
                else args.coordinator_timeout,
            )
            guard.check()
            exp = experiment.validate(experiment.load(args.config, overrides))
            distributed.set_cpu_device_count(exp.mesh.cpu_devices)  # before init_from's checkpoint starts JAX
            exp, start, tokenizer = finetune.prepare(exp)  # model.init_from: the checkpoint's model and tokenizer
            guard.check()
            metrics = train_and_evaluate(exp, args.workdir, start, tokenizer)  # its loop takes over a signal meanwhile
    except (Preempted, StoppedBeforeStart) as stop:  # SIGTERM/SIGINT: a clean stop, not an error
        if isinstance(stop, StoppedBeforeStart) or _is_first_process():
            print(stop, flush=True)
        return 0
    if metrics and _is_first_process():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"Finished: {shown}. Workdir: {args.workdir}")
    return 0


def cmd_export(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.out is None and args.hf is None and args.peft is None:
        raise InputError(
            "export needs --out DIR (jaxformer params), --hf DIR (Hugging Face) or --peft DIR (LoRA adapters)."
        )
    if args.out is not None:
        out, step = export_params(args.workdir, args.out, args.step)
        print(f"Exported the parameters of checkpoint step {step} to {out} (params/ + model_config.json).")
    if args.hf is not None:
        out, step = run_export.export_hf(args.workdir, args.hf, args.step)
        print(f"Exported checkpoint step {step} to {out} as a Hugging Face checkpoint (LoRA adapters merged).")
    if args.peft is not None:
        out, step = run_export.export_peft(args.workdir, args.peft, args.step)
        print(f"Exported the LoRA adapters of checkpoint step {step} to {out} (a PEFT adapter directory).")
    return 0


def _load(args: argparse.Namespace) -> Any:
    """The run named by --workdir (a training run) or --model (a HF checkpoint dir or repo id): exactly one."""
    if (args.workdir is None) == (args.model is None):
        given = "both" if args.workdir is not None else "neither"
        raise InputError(
            f"{given} of --workdir and --model given; pass exactly one (--workdir: a training run, "
            "--model: a Hugging Face checkpoint directory or Hub repo id)."
        )
    if args.model is None:
        if args.revision is not None:
            raise InputError("--revision applies to --model (a Hub repo id); drop it for --workdir.")
        return inference.load_run(args.workdir, args.step)
    if args.step is not None:
        raise InputError("--step applies to --workdir (a training run); a --model checkpoint has one set of weights.")
    return inference.load_model(args.model, args.revision)


def _prompts(args: argparse.Namespace) -> tuple[list[str], bool]:
    """(texts, chat): --prompt texts, or --chat messages for the checkpoint's chat template; exactly one kind."""
    if (args.prompt is None) == (args.chat is None):
        raise InputError("give --prompt TEXT or --chat MESSAGE (one of them, repeatable for a batch).")
    return (args.prompt, False) if args.prompt is not None else (args.chat, True)


def cmd_generate(args: argparse.Namespace, overrides: list[str]) -> int:
    prompts, chat = _prompts(args)
    run = _load(args)
    if args.quantize is not None:
        run = inference.quantized(run, args.quantize)
    if args.print_ids:
        for ids in inference.prompt_ids(run, prompts, chat):
            print(json.dumps({"prompt_ids": ids}))
    if args.draft is not None:
        outputs = _generate_speculative(args, run, prompts, chat)
    else:
        if args.draft_tokens is not None:
            raise InputError("--draft_tokens needs --draft (the draft model's workdir or checkpoint).")
        outputs = inference.generate(run, prompts, _search_of(args), chat=chat)
    for prompt, text in zip(prompts, outputs, strict=True):
        print(f"{prompt}{text}" if args.echo else text)
    return 0


def _generate_speculative(args: argparse.Namespace, run: Any, prompts: list[str], chat: bool) -> list[str]:
    """Speculative decoding with the --draft model; its acceptance rate goes to stderr (stdout: the texts)."""
    draft = drafting.load_draft(args.draft)
    k = DEFAULT_DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens
    result = drafting.generate_speculative(run, prompts, draft, _search_of(args), draft_tokens=k, chat=chat)
    print(
        f"speculative: draft {args.draft}, {k} draft tokens per round, acceptance rate "
        f"{result.acceptance_rate:.3f} ({result.accepted}/{result.proposed}), {result.rounds} rounds",
        file=sys.stderr,
    )
    return result.texts


def cmd_translate(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.input is not None:
        texts = Path(args.input).read_text(encoding="utf-8").splitlines()
        if not texts:
            raise InputError(f"input file {args.input} is empty; put one sentence per line.")
    else:
        texts = args.text
    if args.output:
        outputs_io.check_writable(args.output, "--output")  # before decoding, not after
    run = _load(args)
    search = _search_of(args)  # options left at their defaults: the checkpoint's generation_config.json decides
    changed = {
        f.name: getattr(search, f.name) for f in dataclasses.fields(search) if getattr(search, f.name) != f.default
    }
    outputs = inference.translate(run, texts, None, batch_size=args.batch_size, **changed)
    if args.output:
        outputs_io.write_text(args.output, "".join(f"{line}\n" for line in outputs), "--output")
        print(f"Wrote {len(outputs)} translations to {args.output}.")
    else:
        print("\n".join(outputs))
    return 0


def cmd_evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.json:
        outputs_io.check_writable(args.json, "--json")  # before evaluating, not after
    run = _load(args)
    if args.input is not None:
        run = inference.with_eval_data(run, args.input)
    metrics = inference.evaluate(run, args.split, _search_of(args), batch_size=args.batch_size)
    shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"{args.input or args.split}: {shown}")
    if args.json is None and args.workdir is None:
        return 0  # a --model checkpoint (maybe a read-only Hub cache): metrics are written only where --json says
    out = Path(args.json) if args.json else Path(args.workdir) / f"eval_{args.split}_{args.method}.json"
    outputs_io.write_text(out, json.dumps(metrics, indent=2, sort_keys=True) + "\n", "--json")
    print(f"Wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace, overrides: list[str]) -> int:
    demo.serve(_load(args), host=args.host, port=args.port)
    return 0


def cmd_answer(args: argparse.Namespace, overrides: list[str]) -> int:
    answers = encoder_tasks.answer(
        _load(args),
        args.question,
        args.context,
        args.max_answer_length,
        args.top_k,
        max_seq_len=args.max_seq_len,
        doc_stride=args.doc_stride,
    )
    if not answers:
        raise InputError("no answer span fits in the context; pass a longer context or raise --max_answer_length.")
    for found in answers:
        print(json.dumps(dataclasses.asdict(found)) if args.json else found.text)
    return 0


def cmd_classify(args: argparse.Namespace, overrides: list[str]) -> int:
    for text, result in zip(args.text, encoder_tasks.classify_labels(_load(args), args.text), strict=True):
        if args.json:
            print(json.dumps({"text": text, **result}))
        else:
            print(f"{result['label']}\t{result['probabilities'][result['label']]:.4f}")
    return 0


def cmd_tag(args: argparse.Namespace, overrides: list[str]) -> int:
    words = encoder_tasks.tag(_load(args), args.text)
    print(json.dumps(words) if args.json else " ".join(f"{w['word']}/{w['label']}" for w in words))
    return 0


def _is_first_process() -> bool:
    return jax.process_index() == 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line `error: ...` (exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see '{self.prog} --help').\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="jaxformer", description="Train, evaluate and use Transformers in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an experiment (resumes from the workdir's latest checkpoint)")
    train.add_argument("--config", required=True, help="experiment file, e.g. experiments/default.py")
    train.add_argument("--workdir", required=True, help="directory for metrics, TensorBoard events and checkpoints")
    multi = train.add_argument_group("multi-host (every process runs the same command; see README 'Scaling out')")
    multi.add_argument("--coordinator_address", help="HOST:PORT of process 0 (env JAXFORMER_COORDINATOR)")
    multi.add_argument("--num_processes", type=int, help="processes in the run (env JAXFORMER_NUM_PROCESSES)")
    multi.add_argument("--process_id", type=int, help="this process, 0..num_processes-1 (env JAXFORMER_PROCESS_ID)")
    multi.add_argument(
        "--coordinator_timeout",
        type=float,
        help="seconds to wait for the coordinator and the other processes at start-up (default 300)",
    )
    train.set_defaults(handler=cmd_train)
    export = sub.add_parser("export", help="write a params-only inference checkpoint plus model_config.json")
    export.add_argument("--workdir", required=True, help="training workdir (or a checkpoints/ or step directory)")
    export.add_argument("--out", help="new directory for params/ and model_config.json")
    export.add_argument("--hf", help="new directory for a Hugging Face checkpoint (a LoRA run: adapters merged)")
    export.add_argument("--peft", help="new directory for a LoRA run's adapters in PEFT format")
    export.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest intact one)")
    export.set_defaults(handler=cmd_export)
    _add_use_commands(sub)
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="training workdir (config.json, tokenizer/, checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest intact one)")
    parser.add_argument(
        "--model", help="instead of --workdir: a Hugging Face checkpoint directory or Hub repo id (org/name)"
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) for --model org/name")


SEARCH_HELP = {
    "method": "search method",
    "max_new_tokens": "tokens to generate at most (default: 64 for generate, the training target length otherwise)",
    "beam_size": "beams for --method beam",
    "alpha": "GNMT length penalty for --method beam",
    "temperature": "softmax temperature for sampling",
    "top_k": "sample from the k most likely tokens (0: all)",
    "top_p": "nucleus sampling mass in (0, 1] (1: all)",
    "seed": "sampling seed",
    "length_rule": "beam ranking: gnmt (--alpha) or transformers (--length_penalty, --early_stopping)",
    "length_penalty": "exponent of --length_rule transformers: score = log P / length ** length_penalty",
    "early_stopping": "beam stopping of --length_rule transformers: true | false | never",
    "no_repeat_ngram_size": "ban tokens that repeat an n-gram of this size (0: off)",
    "min_new_tokens": "EOS is banned for the first N new tokens",
    "forced_eos_id": "force the last new token to this id",
}


RULE_FIELDS = (
    "length_rule",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "min_new_tokens",
    "forced_eos_id",
)


def _search_arguments(parser: argparse.ArgumentParser, methods: tuple[str, ...], names: Sequence[str]) -> None:
    """--NAME options for these `SearchConfig` fields, their defaults taken from the dataclass."""
    for field in dataclasses.fields(SearchConfig):
        if field.name not in names:
            continue
        help_text = SEARCH_HELP[field.name] + ("" if field.default is None else f" (default {field.default})")
        if field.name == "method":
            parser.add_argument("--method", choices=methods, default=field.default, help=help_text)
        else:
            kind = int if field.default is None else type(field.default)
            parser.add_argument(f"--{field.name}", type=kind, default=field.default, help=help_text)


def _search_of(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of the parsed --method/--beam_size/... options (validated once, here)."""
    names = [f.name for f in dataclasses.fields(SearchConfig) if hasattr(args, f.name)]
    return SearchConfig.of(None, **{name: getattr(args, name) for name in names})


def _add_use_commands(sub: Any) -> None:
    generate = sub.add_parser("generate", help="continue a prompt with a decoder-only run")
    _run_arguments(generate)
    generate.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    generate.add_argument(
        "--chat", action="append", help="a user message, rendered with the --model checkpoint's chat template"
    )
    generate.add_argument("--print_ids", action="store_true", help='print {"prompt_ids": [...]} per prompt first')
    _search_arguments(generate, METHODS, [f.name for f in dataclasses.fields(SearchConfig)])
    generate.add_argument("--echo", action="store_true", help="print the prompt before its continuation")
    generate.add_argument(
        "--draft", help="speculative decoding with this draft model: a training workdir or a HF checkpoint/repo id"
    )
    generate.add_argument(
        "--draft_tokens", type=int, help=f"tokens the draft proposes per round (default {DEFAULT_DRAFT_TOKENS})"
    )
    generate.add_argument("--quantize", help="int8: decode on int8 weight-only kernels (per-channel scales)")
    generate.set_defaults(handler=cmd_generate)

    translate = sub.add_parser("translate", help="translate text with an encoder-decoder run")
    _run_arguments(translate)
    given = translate.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", action="append", help="text to translate (repeat for a batch)")
    given.add_argument("--input", help="file with one text per line")
    translate.add_argument("--output", help="write the translations here, one per line (default: stdout)")
    _search_arguments(translate, ("greedy", "beam"), ("method", "max_new_tokens", "beam_size", "alpha", *RULE_FIELDS))
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
    evaluate.add_argument(
        "--input", help="with --model: evaluate on this file (one text per line, or source<TAB>reference lines)"
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    demo = sub.add_parser("demo", help="a Gradio web app for a trained run (pip install 'jaxformer[demo]')")
    _run_arguments(demo)
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    demo.set_defaults(handler=cmd_demo)

    answer = sub.add_parser("answer", help="extractive question answering: the best span of --context")
    _run_arguments(answer)
    answer.add_argument("--question", required=True, help="the question")
    answer.add_argument("--context", required=True, help="the text holding the answer")
    answer.add_argument("--max_answer_length", type=int, default=30, help="tokens in an answer at most (default 30)")
    answer.add_argument("--top_k", type=int, default=1, help="print the k best spans, best first (default 1)")
    answer.add_argument(
        "--max_seq_len", type=int, help="tokens per window of a long context (default: min(384, max_len))"
    )
    answer.add_argument("--doc_stride", type=int, default=128, help="tokens shared by neighbouring windows")
    answer.add_argument("--json", action="store_true", help="print each span as JSON (text, characters, score)")
    answer.set_defaults(handler=cmd_answer)

    classify = sub.add_parser("classify", help="label texts with a sequence-classification model")
    _run_arguments(classify)
    classify.add_argument("--text", action="append", required=True, help="text to classify (repeat for a batch)")
    classify.add_argument("--json", action="store_true", help="print label, id and every probability as JSON")
    classify.set_defaults(handler=cmd_classify)

    tag = sub.add_parser("tag", help="label each word of a text with a token-classification model")
    _run_arguments(tag)
    tag.add_argument("--text", required=True, help="text to tag")
    tag.add_argument("--json", action="store_true", help="print the words with characters and probabilities as JSON")
    tag.set_defaults(handler=cmd_tag)


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
        if os.environ.get("JAXFORMER_DEBUG"):
            raise
        if is_user_error(err):
            print(f"error: {_one_line(err, args)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(REPORT_BUG, file=sys.stderr)
        return 1


def is_user_error(err: BaseException) -> bool:
    """A `UserError`, or an OS error on a path the user named (missing, no permission, read-only, full, ...).

    Not any ValueError or KeyError: those are bugs unless raised as a `UserError`. An OS error on a
    file inside the installed package is a bug (or a broken install) too.
    """
    if isinstance(err, UserError):
        return True
    if not is_path_os_error(err):
        return False
    filename = err.filename  # type: ignore[attr-defined]
    return filename is None or PACKAGE_DIR not in Path(os.fsdecode(filename)).resolve().parents


def _flag_for(args: argparse.Namespace | None, filename: Any) -> str | None:
    """The command-line flag whose path is `filename` or one of its parents (e.g. "--workdir"), if any."""
    if args is None or filename is None:
        return None
    target = Path(os.path.abspath(os.fsdecode(filename)))
    best: tuple[int, str] | None = None
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str) or not item.strip():
                continue
            given = Path(os.path.abspath(item))
            if (given == target or given in target.parents) and (best is None or len(given.parts) > best[0]):
                best = (len(given.parts), f"--{name}")
    return best[1] if best else None


def _one_line(err: BaseException, args: argparse.Namespace | None = None) -> str:
    """The error as one line; an OS error on a path names the path, what went wrong and the fix (by errno)."""
    if not isinstance(err, UserError) and is_path_os_error(err):
        return describe_os_error(err, _flag_for(args, err.filename))  # type: ignore[arg-type, attr-defined]
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
