"""Bad configurations stop `jaxformer train` with exit status 2 and ONE line on stderr: `error: ...` naming the
key, the value and, for a misspelt key or name, the nearest valid one. Never a traceback.

Each case runs `jaxformer.cli.main` in process (the function the console script calls); the cases that need
several devices run in one subprocess on 8 fake CPU devices, and one case runs the real console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxformer import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO_ROOT / "experiments" / "default.py")  # encoder-decoder, synthetic reverse digits, batch 64
CLASSIFY = str(REPO_ROOT / "experiments" / "classify_majority.py")  # encoder-only classification
TEXT_LM = (  # a decoder-only LM on a local text file (the path is set per case)
    "--config.model.preset=tiny-gpt2",
    "--config.data.source=text",
    "--config.data.task=lm",
    "--config.data.tokenizer=char",
)

# (id, experiment file, overrides, fragments the error line must contain)
CASES = [
    ("unknown top-level key", DEFAULT, ["--config.foo=1"], ["'foo'", "Valid keys at the top level", "train"]),
    (
        "typo in a train key",
        DEFAULT,
        ["--config.train.learning_rte=1e-3"],
        ["'train.learning_rte'", "Did you mean 'train.learning_rate'?"],
    ),
    ("typo in a model field", DEFAULT, ["--config.model.num_head=4"], ["'model.num_head'", "'model.num_heads'"]),
    ("typo in a section", DEFAULT, ["--config.trian.steps=3"], ["'trian.steps'", "Did you mean 'train.steps'?"]),
    ("steps not a number", DEFAULT, ["--config.train.steps=abc"], ["'train.steps'", "int", "'abc'"]),
    ("fractional batch size", DEFAULT, ["--config.train.batch_size=3.5"], ["'train.batch_size'", "int", "3.5"]),
    ("negative learning rate", DEFAULT, ["--config.train.learning_rate=-1e-3"], ["train.learning_rate=-0.001"]),
    ("zero steps", DEFAULT, ["--config.train.steps=0"], ["train.steps=0", "positive"]),
    ("unknown schedule", DEFAULT, ["--config.train.schedule=cosin"], ["train.schedule='cosin'", "'cosine'", "noam"]),
    ("unknown optimizer", DEFAULT, ["--config.train.optimizer=adam"], ["train.optimizer='adam'", "'adamw'"]),
    ("unknown preset", DEFAULT, ["--config.model.preset=tiny-gpt"], ["'tiny-gpt'", "Did you mean 'tiny-gpt2'?"]),
    (
        "batch not divisible by grad_accum_steps",
        DEFAULT,
        ["--config.train.grad_accum_steps=5"],
        ["train.batch_size=64", "train.grad_accum_steps=5"],
    ),
    (
        "missing data file",
        DEFAULT,
        [*TEXT_LM, "--config.data.train_path={tmp}/missing.txt"],
        ["missing.txt", "does not exist", "data.train_path"],
    ),
    ("missing experiment file", "{tmp}/nope.py", [], ["nope.py", "not found"]),
    (
        "d_model not divisible by num_heads",
        DEFAULT,
        ["--config.model.num_heads=5"],
        ["model.d_model=128", "num_heads=5"],
    ),
    (
        "num_heads not divisible by num_kv_heads",
        DEFAULT,
        ["--config.model.num_kv_heads=3"],
        ["model.num_heads=4", "num_kv_heads=3"],
    ),
    (
        "label smoothing above 1",
        DEFAULT,
        ["--config.train.label_smoothing=1.5"],
        ["train.label_smoothing=1.5", "[0, 1)"],
    ),
    ("mesh product is not the device count", DEFAULT, ["--config.mesh.data=3"], ["mesh", "data=3", "devices"]),
    ("two -1 mesh axes", DEFAULT, ["--config.mesh.fsdp=-1"], ["mesh", "at most one axis may be -1"]),
    ("negative cpu_devices", DEFAULT, ["--config.mesh.cpu_devices=-2"], ["mesh.cpu_devices=-2", "non-negative"]),
    (
        "unknown logical axis in the rules",
        DEFAULT,
        ["--config.logical_axis_rules=[['bogus_axis', 'data']]"],
        ["logical_axis_rules", "'bogus_axis'", "embed"],
    ),
    (
        "rule to an unknown mesh axis",
        DEFAULT,
        ["--config.logical_axis_rules=[['embed', 'bogus']]"],
        ["'embed'", "'bogus'", "data, fsdp, tensor"],
    ),
    ("rule that is not a pair", DEFAULT, ["--config.logical_axis_rules=[['embed']]"], ["each rule", "['embed']"]),
    ("override without a value at the end", DEFAULT, ["--config.train.steps"], ["--config.train.steps", "no value"]),
    (
        "override without a value before another",
        DEFAULT,
        ["--config.train.steps", "--config.train.batch_size=8"],
        ["--config.train.steps", "no value"],
    ),
    ("override of a whole section", DEFAULT, ["--config.model=3"], ["'model' is a section", "--config.model.KEY"]),
    ("unknown data source", DEFAULT, ["--config.data.source=csv"], ["data.source='csv'", "Did you mean 'tsv'?"]),
    (
        "lm task with an encoder-decoder preset",
        DEFAULT,
        [*TEXT_LM, "--config.model.preset=tiny-transformer", "--config.data.train_path={tmp}/any.txt"],
        ["data.task='lm'", "decoder_only", "model.preset='tiny-transformer'", "tiny-gpt2"],
    ),
    (
        "classification task with a decoder-only preset",
        CLASSIFY,
        ["--config.model.preset=tiny-gpt2"],
        ["data.task='classification'", "encoder_only", "'tiny-gpt2'", "tiny-bert"],
    ),
    (
        "synthetic source cannot train an lm",
        DEFAULT,
        ["--config.data.task=lm"],
        ["data.task='lm'", "source='synthetic'", "seq2seq"],
    ),
    (
        "model max_len below data.max_length",
        DEFAULT,
        ["--config.model.max_len=10"],
        ["data.max_length=24", "model.max_len=10"],
    ),
    (
        "source length above model max_len",
        DEFAULT,
        ["--config.data.max_source_length=40"],
        ["data.max_source_length=40", "model.max_len=32"],
    ),
    (
        "synthetic strings longer than the data length",
        DEFAULT,
        ["--config.data.synthetic_max_length=30"],
        ["max_source_length=24", "synthetic_max_length=30", "31"],
    ),
    (
        "bucket boundary of the wrong type",
        DEFAULT,
        ["--config.data.bucket_boundaries=(8, 'a')"],
        ["'data.bucket_boundaries[1]'", "int", "'a'"],
    ),
    (
        "bucket boundaries not a sequence",
        DEFAULT,
        ["--config.data.bucket_boundaries=8"],
        ["'data.bucket_boundaries'", "8"],
    ),
    ("seed not an integer", DEFAULT, ["--config.seed=abc"], ["'seed'", "'abc'"]),
    ("unknown parallelism", DEFAULT, ["--config.parallelism=pjit"], ["parallelism='pjit'", "'jit'"]),
    ("dropout rate above 1", DEFAULT, ["--config.model.dropout_rate=1.5"], ["model.dropout_rate=1.5", "[0, 1)"]),
    ("unknown compute dtype", DEFAULT, ["--config.model.dtype=float64"], ["model.dtype='float64'", "bfloat16"]),
    ("zero checkpoints kept", DEFAULT, ["--config.checkpoint.keep=0"], ["checkpoint.keep=0"]),
]

BAD_EXPERIMENT_FILES = {  # file content -> fragments of the error line
    "def get_config(:\n    pass\n": ["bad_experiment.py", "line 1", "invalid syntax"],
    "x = 1\n": ["bad_experiment.py", "no get_config()"],
    "def get_config():\n    return {'seed': 0}\n": ["returned dict", "ConfigDict", "base_config()"],
    textwrap.dedent(
        """
        from jaxformer.experiment import base_config


        def get_config():
            config = base_config()
            config.trian.steps = 3
            return config
        """
    ): ["bad_experiment.py", "line 7", "'trian'", "train"],
}


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["train", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def assert_one_error_line(code: int, stderr: str, fragments: list[str]) -> None:
    lines = stderr.splitlines()
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from {lines[0]!r}"


@pytest.mark.parametrize(("experiment", "overrides", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_one_clear_line(capsys, tmp_path, experiment, overrides, fragments):
    overrides = [item.replace("{tmp}", str(tmp_path)) for item in overrides]
    experiment = experiment.replace("{tmp}", str(tmp_path))
    workdir = tmp_path / "workdir"
    code, stderr = run_cli(capsys, "--config", experiment, "--workdir", str(workdir), *overrides)
    assert_one_error_line(code, stderr, fragments)
    assert not (workdir / "metrics.jsonl").exists()  # nothing trained


@pytest.mark.parametrize("content", list(BAD_EXPERIMENT_FILES), ids=["syntax", "no-get-config", "dict", "typo"])
def test_broken_experiment_file_is_one_clear_line(capsys, tmp_path, content):
    path = tmp_path / "bad_experiment.py"
    path.write_text(content)
    code, stderr = run_cli(capsys, "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert_one_error_line(code, stderr, BAD_EXPERIMENT_FILES[content])


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAXFORMER_DEBUG"}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


MULTI_DEVICE_CASES = {  # overrides -> fragments, on 8 fake CPU devices
    "--config.mesh.data=-1 --config.train.batch_size=12": ["train.batch_size=12", "data-parallel size 8"],
    "--config.parallelism=pmap --config.train.batch_size=16 --config.train.grad_accum_steps=4": [
        "train.batch_size=16",
        "2 rows per device",
        "train.grad_accum_steps=4",
    ],
    "--config.mesh.tensor=3": ["mesh.tensor=3", "does not divide the 8 devices"],
    "--config.mesh.data=2": ["mesh", "data=2", "8 are available"],
    "--config.mesh.tensor=8": ["mesh.tensor=8", "model.num_heads=4"],
}
MULTI_DEVICE_SCRIPT = """
import contextlib, io, json, sys
import jax
from jaxformer import cli
assert jax.device_count() == 8, jax.devices()
results = {}
for case in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", "--config", sys.argv[2], "--workdir", sys.argv[3], *case.split()])
    results[case] = [code, err.getvalue()]
print(json.dumps(results))
"""


def test_batch_and_mesh_that_do_not_fit_8_devices(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT, json.dumps(list(MULTI_DEVICE_CASES)), DEFAULT, str(tmp_path)],
        env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for case, fragments in MULTI_DEVICE_CASES.items():
        code, stderr = results[case]
        assert "Traceback" not in stderr
        assert_one_error_line(code, stderr, fragments)


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    script = Path(sys.executable).with_name("jaxformer")  # installed by `pip install -e .` beside python
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "jaxformer.cli"]
    proc = subprocess.run(
        [*command, "train", "--config", DEFAULT, "--workdir", str(tmp_path), "--config.train.learning_rat=1e-3"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: unknown config key 'train.learning_rat'. Did you mean 'train.learning_rate'?\n"
    assert proc.stdout == ""


def test_mesh_errors_come_before_the_data_pipeline(tmp_path, monkeypatch, capsys):
    """A mesh the devices cannot hold fails before the pipeline is built (which may train a tokenizer first)."""
    from jaxformer.train import loop

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the data pipeline was built before the mesh was checked")

    monkeypatch.setattr(loop, "build_pipeline", no_pipeline)
    code = cli.main(["train", "--config", DEFAULT, "--workdir", str(tmp_path), "--config.mesh.data=2"])
    stderr = capsys.readouterr().err
    assert code == 2 and "pipeline" not in stderr
    assert_one_error_line(code, stderr, ["mesh", "data=2"])
