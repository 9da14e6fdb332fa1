"""`jaxformer generate --draft DIR --draft_tokens k`: speculative decoding from the command line.

Tiny runs trained here: the shared char LM (target) and a narrower char LM on the same text (draft,
same char vocabulary). The greedy text of `--draft` equals plain `generate` (a subprocess, as a user
runs it); a draft over another vocabulary or of another family is one `error:` line (exit 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.inference_runs import QUIET, TEXT, trained_run
from support.paths import REPO_ROOT
from support.train_runs import train

from jaxformer import cli, drafting, hf, inference

DRAFT = (
    "--config.model.use_bias=True",  # the GPT-2 layout, so it exports to a HF GPT-2 directory
    "--config.model.d_model=16",
    "--config.model.num_heads=2",
    "--config.model.d_ff=24",
    "--config.model.num_layers=1",
    "--config.model.max_len=40",
    "--config.data.max_length=24",
    "--config.train.steps=5",
    "--config.train.batch_size=8",
    "--config.train.warmup_steps=1",
    "--config.checkpoint.every=0",
)


def char_run(root: Path, name: str, text: str) -> Path:
    """A 1-layer, 16-wide char LM trained 5 steps on `text`."""
    data = root / f"{name}.txt"
    data.write_text(text, encoding="utf-8")
    workdir = root / name
    train("shakespeare_char.py", workdir, *QUIET, *DRAFT, f"--config.data.train_path={data}")
    return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speculative")
    return {
        "target": trained_run(tmp_path_factory, "charlm"),
        "draft": char_run(root, "draft", TEXT),  # the same characters: the same vocabulary
        "other_vocab": char_run(root, "other", "0123456789 +-=\n" * 40),
        "classifier": trained_run(tmp_path_factory, "classify"),
    }


def cli_lines(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


ARGS = ("--prompt", "the quick", "--prompt", "a", "--max_new_tokens", "12")


def test_generate_with_a_draft_prints_plain_greedy_text_and_the_acceptance_rate(runs, capsys):
    base = ["generate", "--workdir", str(runs["target"]), *ARGS]
    code, plain, _ = cli_lines(capsys, *base)
    assert code == 0 and len(plain.splitlines()) == 2
    code, out, err = cli_lines(capsys, *base, "--draft", str(runs["draft"]), "--draft_tokens", "3")
    assert code == 0 and out == plain
    rate_lines = [line for line in err.splitlines() if line.startswith("speculative:")]
    assert len(rate_lines) == 1 and "3 draft tokens per round, acceptance rate" in rate_lines[0], err
    # the draft as a Hugging Face model directory (weights only; the target's tokenizer serves both)
    draft = inference.load_run(runs["draft"])
    exported = hf.save(draft.config, draft.params, runs["draft"].parent / "draft-hf")
    code, out, err = cli_lines(capsys, *base, "--draft", str(exported), "--draft_tokens", "3")
    assert code == 0 and out == plain, err
    # the same run as its own draft: every proposal is accepted
    code, out, err = cli_lines(capsys, *base, "--draft", str(runs["target"]), "--draft_tokens", "2")
    assert code == 0 and out == plain
    assert "acceptance rate 1.000" in err


@pytest.mark.slow  # a fresh interpreter: import and compile again (over 20 s on 2 cores)
def test_generate_with_a_draft_in_a_subprocess(runs, capsys):
    base = ["generate", "--workdir", str(runs["target"]), *ARGS]
    code, plain, _ = cli_lines(capsys, *base)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    speculative = subprocess.run(
        [sys.executable, "-m", "jaxformer.cli", *base, "--draft", str(runs["draft"]), "--draft_tokens", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert code == 0 and speculative.returncode == 0, speculative.stderr[-2000:]
    assert speculative.stdout == plain
    assert "acceptance rate" in speculative.stderr


def one_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_bad_drafts_are_one_line_errors(runs, capsys):
    base = ["generate", "--workdir", str(runs["target"]), "--prompt", "the", "--max_new_tokens", "4"]
    vocab = inference.load_run(runs["target"]).config.vocab_size
    other = inference.load_run(runs["other_vocab"]).config.vocab_size
    assert other != vocab
    one_error(
        *cli_lines(capsys, *base, "--draft", str(runs["other_vocab"]))[::2],
        f"the draft's vocabulary has {other} ids but the target's has {vocab}",
    )
    one_error(*cli_lines(capsys, *base, "--draft", str(runs["classifier"]))[::2], "needs a decoder-only draft")
    one_error(*cli_lines(capsys, *base, "--draft_tokens", "3")[::2], "--draft_tokens needs --draft")
    one_error(
        *cli_lines(capsys, *base, "--draft", str(runs["draft"]), "--draft_tokens", "0")[::2],
        "draft_tokens=0 must be an integer in [1, 64]",
    )
    one_error(*cli_lines(capsys, *base, "--draft", str(runs["target"] / "missing"))[::2])


def test_python_api_takes_a_run_a_path_or_config_and_params(runs):
    target = inference.load_run(runs["target"])
    draft = inference.load_run(runs["draft"])
    prompts = ["the quick", "a"]
    plain = inference.generate(target, prompts, max_new_tokens=10)
    for form in (draft, runs["draft"], str(runs["draft"]), (draft.config, draft.params)):
        out = drafting.generate_speculative(target, prompts, form, max_new_tokens=10, draft_tokens=3)
        assert out.texts == plain and 0.0 <= out.acceptance_rate <= 1.0 and out.proposed > 0
    with pytest.raises(inference.InferenceError, match="draft's vocabulary has 99 ids"):
        drafting.generate_speculative(target, prompts, ("tiny-gpt2", draft.params), max_new_tokens=4)
    with pytest.raises(inference.InferenceError, match="max_new_tokens=40 must be in"):
        drafting.generate_speculative(target, prompts, draft, max_new_tokens=40, draft_tokens=4)
