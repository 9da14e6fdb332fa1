"""`jaxformer generate --quantize int8`: greedy decoding on int8 weight-only kernels from the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest
from support.inference_runs import trained_run
from support.paths import REPO_ROOT

from jaxformer import cli, inference
from jaxformer.decoding.quantize import Int8Kernel

ARGS = ("--prompt", "the quick", "--max_new_tokens", "12")


@pytest.fixture(scope="module")
def charlm(tmp_path_factory: pytest.TempPathFactory):
    return trained_run(tmp_path_factory, "charlm")


def cli_lines(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quantized_run_keeps_int8_kernels_and_generates(charlm):
    run = inference.quantized(inference.load_run(charlm))
    kernels = [
        k for k in jax.tree.leaves(run.params, is_leaf=lambda x: isinstance(x, Int8Kernel)) if isinstance(k, Int8Kernel)
    ]
    assert kernels and all(str(k.values.dtype) == "int8" for k in kernels)
    (text,) = inference.generate(run, ["the quick"], max_new_tokens=12)
    assert isinstance(text, str)


@pytest.mark.parametrize(("value", "message"), [("int4", "unknown quantization 'int4'")])
def test_bad_quantize_value_is_one_line_exit_2(charlm, capsys, value, message):
    code, _, err = cli_lines(capsys, "generate", "--workdir", str(charlm), *ARGS, "--quantize", value)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow  # a fresh interpreter: import and compile again
def test_generate_quantize_int8_in_a_subprocess(charlm, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "jaxformer.cli", "generate", "--workdir", str(charlm), *ARGS, "--quantize", "int8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) == 1
