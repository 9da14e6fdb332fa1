"""Fault injection: bad inputs and faults across train / evaluate / translate / generate / export / demo / hf.load.

    python -m benchmarks.fault_injection [--jobs 2] [--only SUBSTRING] [--out benchmarks/results/fault_injection.json]

Every case runs the real command line (`python -m jaxformer.cli ...`, or a short `python -c` for the
Python-API cases) in a fresh subprocess, on small runs and checkpoints this script makes first in a
temporary directory. Each outcome is classified from the exit status and the output:

    one line     exit 2, exactly one `error: ...` line on stderr, no traceback (a user error, reported)
    usage        exit 2 from argparse (`usage:` plus one `error:` line): a malformed command line
    clean stop   exit 0 with the stop message (signals)
    warned       exit 0 with a WARNING line where a warning is the promised answer (divergence, allow_nonfinite)
    traceback    a Python traceback reached the user
    silent       exit 0 (or another status) with no error where one was due: a wrong result passed as good
    hang         still running after the case's time limit

The table (case -> outcome) and the counts are printed and written as JSON; the README "Reliability"
section quotes the counts. The aim is 0 traceback, 0 silent, 0 hang; `tests/test_fault_injection.py`
(marked slow) runs this script and holds it to that.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SMOKE = str(EXPERIMENTS / "smoke.py")
QUIET = ("--config.train.progress=False",)
CHAR_LM = (  # a 1-layer char-level LM on a local text file (the file is made in the scratch dir)
    "--config.model.preset=tiny-gpt2",
    "--config.model.num_layers=1",
    "--config.model.max_len=32",
    "--config.data.source=text",
    "--config.data.task=lm",
    "--config.data.tokenizer=char",
    "--config.data.max_length=24",
    "--config.data.holdout_fraction=0.2",
    "--config.train.steps=4",
    "--config.train.batch_size=4",
    "--config.train.warmup_steps=1",
    "--config.train.log_every=2",
    "--config.train.eval_every=0",
    "--config.train.num_samples=0",
    "--config.checkpoint.every=2",
)
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40

EXPECTED = {"error": ("one line", "usage"), "stop": ("clean stop",), "warn": ("warned",)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input or fault: the command (argv after `python -m jaxformer.cli`, or Python code), what must happen."""

    name: str
    area: str
    argv: tuple[str, ...] = ()
    code: str | None = None  # Python-API cases: run with `python -c`
    expect: str = "error"  # error | stop | warn
    contains: str = ""  # a fragment the error/stop line must hold
    setup: Callable[[Path], None] | None = None  # prepares the case's own directory
    signal_after: str | None = None  # stop cases: "path:P", SIGTERM once file P exists
    timeout_s: float = 180.0
    disk_fault: tuple[str, str, str | None] | None = None  # (ENOSPC|EROFS|EACCES, under, after): see disk_faults


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str) -> tuple[str, ...]:
    return tuple(args)


def make_fixtures(root: Path) -> dict[str, Path]:
    """Small real runs and checkpoints shared by the cases (read-only for them)."""
    paths = {
        "text": write(root / "data" / "train.txt", TEXT),
        "empty": write(root / "data" / "empty.txt", ""),
        "translate_out": root / "out",
    }
    paths["translate_out"].mkdir()
    lm = (*CHAR_LM, f"--config.data.train_path={paths['text']}")
    runs = {
        "seq2seq": ("train", "--config", SMOKE, "--workdir", str(root / "seq2seq"), *QUIET),
        "charlm": ("train", "--config", SMOKE, "--workdir", str(root / "charlm"), *lm, *QUIET),
    }
    for name, argv in runs.items():
        done = subprocess.run([sys.executable, "-m", "jaxformer.cli", *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"fixture run {name} failed:\n{done.stderr[-3000:]}")
        paths[name] = root / name
    hf_dir = root / "hf-gpt2"
    code = textwrap.dedent(
        f"""
        import jax, numpy as np
        from jaxformer import hf, presets
        from jaxformer.hf.convert import nested, param_shapes
        config = presets.get("tiny-gpt2")
        rng = np.random.default_rng(0)
        params = nested({{p: rng.normal(0, 0.2, s).astype(np.float32) for p, s in param_shapes(config).items()}})
        hf.save(config, params, {str(hf_dir)!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fixture hf checkpoint failed:\n{done.stderr[-3000:]}")
    paths["hf"] = hf_dir
    return paths


def copy_of(source: Path) -> Callable[[Path], None]:
    def setup(case_dir: Path) -> None:
        shutil.copytree(source, case_dir / "run")

    return setup


def damage_safetensors(kind: str, hf_dir: Path) -> Callable[[Path], None]:
    def setup(case_dir: Path) -> None:
        target = case_dir / "ckpt"
        shutil.copytree(hf_dir, target)
        file = target / "model.safetensors"
        if kind == "truncate":
            data = file.read_bytes()
            file.write_bytes(data[: len(data) // 2])
        elif kind == "header":
            data = bytearray(file.read_bytes())
            data[8:24] = b"\xff" * 16
            file.write_bytes(bytes(data))
        elif kind == "nan":
            code = (
                "from safetensors.numpy import load_file, save_file; import numpy as np; "
                f"t = load_file({str(file)!r}); k = sorted(t)[3]; a = t[k].copy(); a.flat[0] = np.nan; t[k] = a; "
                f"save_file(t, {str(file)!r}, metadata={{'format': 'pt'}})"
            )
            subprocess.run([sys.executable, "-c", code], check=True)
        elif kind == "no_config":
            (target / "config.json").unlink()
        elif kind == "model_type":
            config = json.loads((target / "config.json").read_text())
            config["model_type"] = "not_a_model"
            (target / "config.json").write_text(json.dumps(config))
        elif kind == "bad_json":
            (target / "config.json").write_text("{ not json")
        elif kind == "missing_tensor":
            code = (
                "from safetensors.numpy import load_file, save_file; "
                f"t = load_file({str(file)!r}); t.pop(sorted(t)[0]); save_file(t, {str(file)!r}, metadata={{'format': 'pt'}})"
            )
            subprocess.run([sys.executable, "-c", code], check=True)
        elif kind == "no_weights":
            file.unlink()

    return setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAULT_SHIM_SOURCE = REPO / "tests" / "support" / "fault_fs.c"
FAULT_ERRNOS = {"ENOSPC": 28, "EROFS": 30, "EACCES": 13}


def build_fault_shim(root: Path) -> Path | None:
    """The LD_PRELOAD shim of tests/support/fault_fs.c (full / read-only disk at the libc calls), or None without gcc."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    out = root / "fault_fs.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(FAULT_SHIM_SOURCE), "-ldl"], check=True)
    return out


def disk_faults(s2s: str, lm: str) -> list[Case]:
    """A full, read-only or forbidden disk under each command's output: (name, area, argv, kind, under, after)."""
    train = (
        "train",
        "--config",
        SMOKE,
        "--workdir",
        "{dir}/run",
        "--config.train.steps=6",
        "--config.checkpoint.every=2",
    )
    rows = [
        ("train: disk full at the second save", "train", train, "ENOSPC", "{dir}/run/checkpoints", "{dir}/run/checkpoints/2", "needs about"),
        ("train: disk read-only for checkpoints after a save", "train", train, "EROFS", "{dir}/run/checkpoints", "{dir}/run/checkpoints/2", "is kept"),
        ("train: disk forbids checkpoints after a save", "train", train, "EACCES", "{dir}/run/checkpoints", "{dir}/run/checkpoints/2", "is kept"),
        ("train: workdir on a read-only disk", "train", train, "EROFS", "{dir}", None, "--workdir"),
        ("train: workdir on a full disk", "train", train, "ENOSPC", "{dir}", None, "another disk"),
        ("export: --out on a full disk", "export", ("export", "--workdir", lm, "--out", "{dir}/out"), "ENOSPC", "{dir}", None, "--out"),
        ("export: --out on a read-only disk", "export", ("export", "--workdir", lm, "--out", "{dir}/out"), "EROFS", "{dir}", None, "--out"),
        ("evaluate: --json on a full disk", "evaluate", ("evaluate", "--workdir", s2s, "--json", "{dir}/m.json"), "ENOSPC", "{dir}", None, "printed above"),
        ("translate: --output on a forbidding disk", "translate", ("translate", "--workdir", s2s, "--text", "12", "--output", "{dir}/t.txt"), "EACCES", "{dir}", None, "printed above"),
    ]  # fmt: skip
    return [
        Case(name, area, argv, contains=contains, disk_fault=(kind, under, after))
        for name, area, argv, kind, under, after, contains in rows
    ]


def command_cases(command: str, base: tuple[str, ...], *rows: tuple[str, tuple[str, ...]]) -> list[Case]:
    """One case per (what, extra arguments) row, each running `jaxformer COMMAND *base *extra`."""
    return [Case(f"{command}: {what}", command, cli(command, *base, *extra)) for what, extra in rows]


def build_cases(fx: dict[str, Path]) -> list[Case]:
    s2s, lm, hf_dir, text = str(fx["seq2seq"]), str(fx["charlm"]), fx["hf"], str(fx["text"])
    train = ("train", "--config", SMOKE)
    lm_data = (*CHAR_LM, f"--config.data.train_path={text}", *QUIET)
    load = "from jaxformer import hf; hf.load({path!r})"
    cases = [
        # train: the experiment file and its overrides
        Case("unknown top-level key", "train", cli(*train, "--workdir", "{dir}/w", "--config.foo=1"), contains="'foo'"),
        Case("misspelt train key", "train", cli(*train, "--workdir", "{dir}/w", "--config.train.learning_rte=1")),
        Case("steps not a number", "train", cli(*train, "--workdir", "{dir}/w", "--config.train.steps=abc")),
        Case("zero steps", "train", cli(*train, "--workdir", "{dir}/w", "--config.train.steps=0")),
        Case("negative learning rate", "train", cli(*train, "--workdir", "{dir}/w", "--config.train.learning_rate=-1")),
        Case("unknown preset", "train", cli(*train, "--workdir", "{dir}/w", "--config.model.preset=tiny-gpt")),
        Case("unknown optimizer", "train", cli(*train, "--workdir", "{dir}/w", "--config.train.optimizer=sgdd")),
        Case("fractional batch size", "train", cli(*train, "--workdir", "{dir}/w", "--config.train.batch_size=2.5")),
        Case("missing experiment file", "train", cli("train", "--config", "{dir}/nope.py", "--workdir", "{dir}/w")),
        Case(
            "directory as --config",
            "train",
            cli("train", "--config", str(EXPERIMENTS), "--workdir", "{dir}/w"),
            contains="directory",
        ),
        Case(
            "syntax error in the experiment",
            "train",
            cli("train", "--config", "{dir}/bad.py", "--workdir", "{dir}/w"),
            setup=lambda d: write(d / "bad.py", "def get_config(:\n"),
        ),
        Case(
            "experiment without get_config",
            "train",
            cli("train", "--config", "{dir}/bad.py", "--workdir", "{dir}/w"),
            setup=lambda d: write(d / "bad.py", "X = 1\n"),
        ),
        Case(
            "get_config returns a dict",
            "train",
            cli("train", "--config", "{dir}/bad.py", "--workdir", "{dir}/w"),
            setup=lambda d: write(d / "bad.py", "def get_config():\n    return {}\n"),
        ),
        Case(
            "experiment raises",
            "train",
            cli("train", "--config", "{dir}/bad.py", "--workdir", "{dir}/w"),
            setup=lambda d: write(d / "bad.py", "def get_config():\n    raise RuntimeError('boom')\n"),
        ),
        Case("empty --workdir", "train", cli(*train, "--workdir", ""), contains="--workdir is empty"),
        Case(
            "--workdir is a file",
            "train",
            cli(*train, "--workdir", "{dir}/f"),
            setup=lambda d: write(d / "f", "x"),
            contains="is a file",
        ),
        Case(
            "--workdir under a file",
            "train",
            cli(*train, "--workdir", "{dir}/f/run"),
            setup=lambda d: write(d / "f", "x"),
        ),
        Case(
            "missing data file",
            "train",
            cli(*train, "--workdir", "{dir}/w", *CHAR_LM, "--config.data.train_path={dir}/x.txt"),
        ),
        Case(
            "empty data file",
            "train",
            cli(*train, "--workdir", "{dir}/w", *CHAR_LM, f"--config.data.train_path={fx['empty']}"),
        ),
        Case(
            "data path is a directory",
            "train",
            cli(*train, "--workdir", "{dir}/w", *CHAR_LM, "--config.data.train_path={dir}"),
        ),
        Case("unknown data source", "train", cli(*train, "--workdir", "{dir}/w", "--config.data.source=tfds_x")),
        Case(
            "unknown tokenizer", "train", cli(*train, "--workdir", "{dir}/w", *lm_data, "--config.data.tokenizer=wordz")
        ),
        Case("heads do not divide d_model", "train", cli(*train, "--workdir", "{dir}/w", "--config.model.num_heads=5")),
        Case(
            "cudnn attention on CPU",
            "train",
            cli(*train, "--workdir", "{dir}/w", "--config.model.attention_impl=cudnn"),
        ),
        Case(
            "unknown attention_impl",
            "train",
            cli(*train, "--workdir", "{dir}/w", "--config.model.attention_impl=flashy"),
        ),
        Case("mesh larger than the devices", "train", cli(*train, "--workdir", "{dir}/w", "--config.mesh.fsdp=8")),
        Case(
            "batch not divisible by grad accumulation",
            "train",
            cli(*train, "--workdir", "{dir}/w", "--config.train.grad_accum_steps=3"),
        ),
        Case(
            "num_processes=0",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/w",
                "--coordinator_address",
                "127.0.0.1:1",
                "--num_processes",
                "0",
                "--process_id",
                "0",
            ),
            contains=">= 1",
        ),
        Case(
            "process_id out of range",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/w",
                "--coordinator_address",
                "127.0.0.1:1",
                "--num_processes",
                "2",
                "--process_id",
                "2",
            ),
        ),
        Case(
            "processes without coordinator",
            "train",
            cli(*train, "--workdir", "{dir}/w", "--num_processes", "2", "--process_id", "0"),
        ),
        Case(
            "no coordinator listening",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/w",
                "--coordinator_address",
                f"127.0.0.1:{free_port()}",
                "--num_processes",
                "2",
                "--process_id",
                "1",
                "--coordinator_timeout",
                "2",
            ),
            contains="within 2 s",
            timeout_s=60,
        ),
        Case(
            "coordinator timeout 0",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/w",
                "--coordinator_address",
                "127.0.0.1:1",
                "--num_processes",
                "2",
                "--process_id",
                "1",
                "--coordinator_timeout",
                "0",
            ),
        ),
        Case(
            "divergence stops the run",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/w",
                *lm_data,
                "--config.train.learning_rate=1e6",
                "--config.train.steps=12",
                "--config.train.on_divergence=stop",
                "--config.train.divergence_factor=2",
            ),
        ),
        Case(
            "divergence warns",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/w",
                *lm_data,
                "--config.train.learning_rate=1e6",
                "--config.train.steps=12",
                "--config.train.divergence_factor=2",
            ),
            expect="warn",
        ),
        Case(
            "resume with another model",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/run",
                *lm_data,
                f"--config.data.train_path={text}",
                "--config.model.d_model=64",
            ),
            setup=copy_of(fx["charlm"]),
        ),
        Case(
            "resume with a changed alphabet",
            "train",
            cli(
                *train,
                "--workdir",
                "{dir}/run",
                *CHAR_LM,
                "--config.data.train_path={dir}/t.txt",
                "--config.train.steps=6",
                *QUIET,
            ),
            setup=lambda d: (copy_of(fx["charlm"])(d), write(d / "t.txt", TEXT.replace("q", "Q"))),
        ),
        Case(
            "every checkpoint damaged",
            "train",
            cli(*train, "--workdir", "{dir}/run", *lm_data, "--config.train.steps=6"),
            setup=lambda d: (
                copy_of(fx["charlm"])(d),
                [
                    write(p, "garbage")
                    for p in (d / "run" / "checkpoints").rglob("*")
                    if p.is_file() and p.stat().st_size > 200
                ],
            ),
        ),
        Case(
            "SIGTERM during start-up",
            "train",
            cli(*train, "--workdir", "{dir}/w", "--config.train.steps=100000"),
            expect="stop",
            signal_after="path:{dir}/w",
            contains="before the first step",
        ),
        Case(
            "SIGTERM while training",
            "train",
            cli(*train, "--workdir", "{dir}/w", "--config.train.steps=100000", "--config.train.log_every=1"),
            expect="stop",
            signal_after="path:{dir}/w/checkpoints/10",  # the first save (every 10 steps): training is under way
            contains="checkpoint saved",
        ),
        Case(
            "override given to generate",
            "generate",
            cli("generate", "--workdir", lm, "--prompt", "a", "--config.train.steps=1"),
        ),
        # evaluate
        Case("evaluate: missing workdir", "evaluate", cli("evaluate", "--workdir", "{dir}/none")),
        Case("evaluate: workdir without a run", "evaluate", cli("evaluate", "--workdir", "{dir}")),
        Case(
            "evaluate: --json is a directory",
            "evaluate",
            cli("evaluate", "--workdir", s2s, "--json", str(fx["translate_out"])),
            contains="is a directory",
        ),
        Case(
            "evaluate: --json parent missing",
            "evaluate",
            cli("evaluate", "--workdir", s2s, "--json", "{dir}/no/m.json"),
        ),
        Case("evaluate: unknown split", "evaluate", cli("evaluate", "--workdir", s2s, "--split", "dev")),
        Case("evaluate: missing step", "evaluate", cli("evaluate", "--workdir", s2s, "--step", "999")),
        Case("evaluate: beam 0", "evaluate", cli("evaluate", "--workdir", s2s, "--method", "beam", "--beam_size", "0")),
        # translate
        *command_cases(
            "translate",
            ("--workdir", s2s),
            ("--output is a directory", ("--text", "123", "--output", str(fx["translate_out"]))),
            ("--input missing", ("--input", "{dir}/none.txt")),
            ("--input empty", ("--input", str(fx["empty"]))),
            ("--input is a directory", ("--input", "{dir}")),
            ("beam size 0", ("--text", "12", "--method", "beam", "--beam_size", "0")),
            ("beam size huge", ("--text", "12", "--method", "beam", "--beam_size", "100000")),
            ("max_new_tokens huge", ("--text", "12", "--max_new_tokens", "1000000000")),
            ("empty text", ("--text", "")),
        ),
        Case("translate: decoder-only run", "translate", cli("translate", "--workdir", lm, "--text", "12")),
        Case("generate: encoder-decoder run", "generate", cli("generate", "--workdir", s2s, "--prompt", "12")),
        *command_cases(
            "generate",
            ("--workdir", lm),
            ("empty prompt", ("--prompt", "")),
            ("top_p 0", ("--prompt", "th", "--method", "sample", "--top_p", "0")),
            ("negative temperature", ("--prompt", "th", "--method", "sample", "--temperature", "-1")),
            ("negative top_k", ("--prompt", "th", "--method", "sample", "--top_k", "-3")),
            ("character outside the vocabulary", ("--prompt", "th\u00e9\u4e2d")),
            ("prompt longer than max_len", ("--prompt", "the " * 40)),
            ("missing step", ("--prompt", "th", "--step", "7")),
            ("unknown method", ("--prompt", "th", "--method", "nucleus")),
        ),
        # export
        Case("export: missing workdir", "export", cli("export", "--workdir", "{dir}/none", "--out", "{dir}/out")),
        Case(
            "export: --out is a file",
            "export",
            cli("export", "--workdir", lm, "--out", "{dir}/f"),
            setup=lambda d: write(d / "f", "x"),
        ),
        Case("export: missing step", "export", cli("export", "--workdir", lm, "--out", "{dir}/out", "--step", "999")),
        # demo
        Case("demo: missing workdir", "demo", cli("demo", "--workdir", "{dir}/none")),
        Case("demo: bad port", "demo", cli("demo", "--workdir", lm, "--port", "-5")),
        # hf.load through the Python API
        Case("hf.load: missing directory", "hf.load", code=load.format(path="{dir}/none")),
        *(
            Case(
                f"hf.load: {what}",
                "hf.load",
                code=load.format(path="{dir}/ckpt"),
                setup=damage_safetensors(kind, hf_dir),
            )
            for what, kind in (
                ("no config.json", "no_config"),
                ("config.json not JSON", "bad_json"),
                ("unsupported model_type", "model_type"),
                ("no weights file", "no_weights"),
                ("a tensor missing", "missing_tensor"),
                ("truncated safetensors", "truncate"),
                ("garbled safetensors header", "header"),
            )
        ),
        Case(
            "hf.load: NaN weight",
            "hf.load",
            code=load.format(path="{dir}/ckpt"),
            setup=damage_safetensors("nan", hf_dir),
            contains="NaN/inf",
        ),
        Case(
            "hf.load: NaN weight allowed",
            "hf.load",
            code="from jaxformer import hf; hf.load('{dir}/ckpt', allow_nonfinite=True)",
            setup=damage_safetensors("nan", hf_dir),
            expect="warn",
        ),
        Case("hf.load: offline repo id", "hf.load", code=load.format(path="nobody-here/no-such-model")),
        Case(
            "model.vocab_size below the tokenizer",
            "train",
            cli(*train, "--workdir", "{dir}/w", *lm_data, "--config.model.vocab_size=8"),
            contains="at least",
        ),
    ]
    if fx.get("fault_shim") is not None:
        cases += disk_faults(s2s, lm)
    return cases


# Running and classifying ------------------------------------------------------------------------

PY_API_WRAPPER = textwrap.dedent(
    """
    import sys
    from jaxformer import errors
    try:
        exec(compile(sys.argv[1], "<case>", "exec"))
    except errors.UserError as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        sys.exit(2)
    """
)


def run_case(case: Case, scratch: Path, env: dict[str, str]) -> dict[str, object]:
    case_dir = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
    if case.setup is not None:
        case.setup(case_dir)
    if case.code is not None:
        command = [sys.executable, "-c", PY_API_WRAPPER, case.code.replace("{dir}", str(case_dir))]
    else:
        command = [sys.executable, "-m", "jaxformer.cli", *(a.replace("{dir}", str(case_dir)) for a in case.argv)]
    if case.disk_fault is not None:
        kind, under, after = case.disk_fault
        env = {**env, "LD_PRELOAD": env["JAXFORMER_FAULT_SHIM"], "JAXFORMER_FAULT_ERRNO": str(FAULT_ERRNOS[kind])}
        env["JAXFORMER_FAULT_PATH"] = under.replace("{dir}", str(case_dir.resolve()))
        if after is not None:
            env["JAXFORMER_FAULT_AFTER"] = after.replace("{dir}", str(case_dir.resolve()))
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=case_dir)
    if case.signal_after is not None:
        out, err, code = _signal_when(proc, case.signal_after.replace("{dir}", str(case_dir)), case.timeout_s)
    else:
        try:
            out, err = proc.communicate(timeout=case.timeout_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = None
    outcome = classify(case, code, out, err)
    shutil.rmtree(case_dir, ignore_errors=True)
    last = next((line for line in reversed((err + out).splitlines()) if line.strip()), "")
    return {
        "case": case.name,
        "area": case.area,
        "expect": case.expect,
        "outcome": outcome,
        "ok": outcome in EXPECTED[case.expect],
        "exit": code,
        "seconds": round(time.monotonic() - start, 1),
        "last_line": last[:300],
    }


def _signal_when(proc: subprocess.Popen, marker: str, timeout_s: float) -> tuple[str, str, int | None]:
    """Send SIGTERM once the file `marker` ("path:P") exists: a run's workdir is made after the CLI's start-up
    guard is in place and before the first step ("during start-up"); checkpoints/10 once training is under way."""
    deadline = time.monotonic() + timeout_s
    path = Path(marker.removeprefix("path:"))
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        return out, err, proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err, None


def classify(case: Case, code: int | None, out: str, err: str) -> str:
    if code is None:
        return "hang"
    if "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in out:
        return "traceback"
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    if code == 2 and err.lstrip().startswith("usage:") and len([ln for ln in err.splitlines() if "error:" in ln]) == 1:
        return "usage"
    if code == 2 and len(error_lines) == 1 and (not case.contains or case.contains in error_lines[0]):
        return "one line"
    if code == 0 and case.expect == "stop" and (not case.contains or case.contains in out + err):
        return "clean stop"
    if code == 0 and case.expect == "warn" and "WARNING" in out + err:
        return "warned"
    if code == 0:
        return "silent"
    return f"exit {code}"  # another status or several lines: counted as a failure of its own kind


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fault_injection.json"))
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("JAXFORMER_DEBUG", None)
    with tempfile.TemporaryDirectory(prefix="jaxformer-faults-") as tmp:
        scratch = Path(tmp)
        env["HF_HOME"] = str(scratch / "hf-home")  # an empty cache: the Hub case is offline and uncached
        started = time.monotonic()
        fixtures = make_fixtures(scratch)
        shim = build_fault_shim(scratch)
        if shim is not None:
            fixtures["fault_shim"] = shim
            env["JAXFORMER_FAULT_SHIM"] = str(shim)
        cases = [c for c in build_cases(fixtures) if args.only in c.name]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(lambda c: run_case(c, scratch, env), cases))
    width = max(len(r["case"]) for r in results)
    for r in results:
        mark = "ok " if r["ok"] else "BAD"
        print(f"{mark} {r['area']:<9} {r['case']:<{width}}  {r['outcome']:<10} {r['last_line'][:110]}")
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r["outcome"])] = counts.get(str(r["outcome"]), 0) + 1
    failures = [r for r in results if not r["ok"]]
    summary = {
        "cases": len(results),
        "as_promised": len(results) - len(failures),
        "outcomes": counts,
        "traceback": counts.get("traceback", 0),
        "silent": counts.get("silent", 0),
        "hang": counts.get("hang", 0),
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.monotonic() - started, 1),
    }
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"\n{len(results)} cases on {summary['cpu']}: {shown}; {len(failures)} not as promised.")
    Path(args.out).write_text(json.dumps({"summary": summary, "results": results}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
