"""`jaxformer.inference` and the `generate` / `translate` / `evaluate` commands on tiny trained runs.

References: digit reversal (the task's definition), greedy continuation by repeated full forward
passes without a cache, the classifier applied to one unpadded row, and the training loop's own
final evaluation loss in metrics.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from support.inference_runs import trained_run

from jaxformer import cli, inference, models
from jaxformer.data.tokenizers import BOS_ID, EOS_ID
from jaxformer.train.metrics import read_metrics

DIGITS = ["25103", "907", "4411", "8362", "150"]


@pytest.fixture(scope="module")
def reverse(tmp_path_factory: pytest.TempPathFactory) -> inference.Run:
    return inference.load_run(trained_run(tmp_path_factory, "reverse"))


@pytest.fixture(scope="module")
def charlm(tmp_path_factory: pytest.TempPathFactory) -> inference.Run:
    return inference.load_run(trained_run(tmp_path_factory, "charlm"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> inference.Run:
    return inference.load_run(trained_run(tmp_path_factory, "classify"))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Translation ------------------------------------------------------------------------------


def test_translate_reverses_digit_strings(reverse: inference.Run) -> None:
    assert reverse.family == "encoder_decoder" and reverse.step == 300
    # batches of 2 (sorted by length, padded to a width bucket) come back in the caller's order
    assert inference.translate(reverse, DIGITS, batch_size=2) == [s[::-1] for s in DIGITS]
    assert inference.translate(reverse, ["25103"]) == ["30152"]
    assert inference.translate(reverse, ["4411"], method="beam", beam_size=3) == ["1144"]


def test_evaluate_matches_training_eval_and_task(reverse: inference.Run) -> None:
    final = [r for r in read_metrics(reverse.workdir) if "eval_loss" in r][-1]
    result = inference.evaluate(reverse, "validation")
    assert result["examples"] == 100 and result["step"] == 300
    assert result["loss"] == pytest.approx(final["eval_loss"], rel=1e-4)  # the training loop's own evaluation
    assert result["accuracy"] == pytest.approx(final["eval_accuracy"], abs=1e-6)
    assert result["exact_match"] >= 0.97 and result["chrf"] >= 95.0 and 0.0 <= result["bleu"] <= 100.0
    assert result["method"] == "greedy" and result["examples"] == 100


# Generation --------------------------------------------------------------------------------


def greedy_by_full_forward(run: inference.Run, prompt: str, steps: int) -> str:
    """Greedy continuation recomputing the whole sequence each step (no cache), decoded.

    The sequence sits in a [1, max_len] buffer (causal attention: the zeros after the current
    token change nothing), so one compiled forward pass serves every step.
    """
    forward = jax.jit(models.build(run.config).apply)
    tokens = [BOS_ID, *run.tokenizer.encode(prompt)]
    new: list[int] = []
    for _ in range(steps):
        buffer = np.zeros((1, run.config.max_len), np.int32)
        buffer[0, : len(tokens) + len(new)] = tokens + new
        logits = np.asarray(forward({"params": run.params}, buffer))  # [1, max_len, V]
        token = int(np.argmax(logits[0, len(tokens) + len(new) - 1]))
        new.append(token)
        if token == EOS_ID:
            break
    return run.tokenizer.decode(new)


def test_generate_greedy_equals_full_forward_argmax(charlm: inference.Run) -> None:
    prompts = ["the quick", "lazy"]
    outputs = inference.generate(charlm, prompts, max_new_tokens=12)
    assert outputs == [greedy_by_full_forward(charlm, p, 12) for p in prompts]
    assert all(len(o) > 0 for o in outputs)


def test_generate_sampling_is_seeded_and_cold_sampling_is_greedy(charlm: inference.Run) -> None:
    settings = dict(max_new_tokens=10, method="sample", temperature=0.8, top_p=0.9, seed=7)
    first = inference.generate(charlm, ["the "], **settings)
    assert inference.generate(charlm, ["the "], **settings) == first
    greedy = inference.generate(charlm, ["the "], max_new_tokens=10)
    assert inference.generate(charlm, ["the "], **{**settings, "temperature": 1e-4, "seed": 3}) == greedy


# Classification ----------------------------------------------------------------------------


def test_classify_equals_unpadded_forward(classifier: inference.Run) -> None:
    texts = ["9876512", "0123401234"]
    results = inference.classify(classifier, texts)
    model = models.build(classifier.config)
    for text, (label, probs) in zip(texts, results, strict=True):
        row = np.asarray([[BOS_ID, *classifier.tokenizer.encode(text), EOS_ID]], np.int32)
        logits = np.asarray(model.apply({"params": classifier.params}, row)["logits"])[0]
        expected = np.asarray(jax.nn.softmax(logits))
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert label == int(np.argmax(expected)) and sum(probs) == pytest.approx(1.0, abs=1e-5)


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(texts=[""]), "the text is empty"),
        (dict(texts=["   "]), "the text is empty"),
        (dict(texts=["123456789012"]), "tokens long but the model takes at most 8"),
        (dict(texts=["123"], max_new_tokens=10**9), "max_new_tokens=1000000000 must be an integer in [1, 8]"),
        (dict(texts=["123"], max_new_tokens=0), "max_new_tokens=0"),
        (dict(texts=["123"], method="sample", top_p=5), "top_p=5 must be a number in (0.0, 1.0]"),
        (dict(texts=["123"], method="nucleus"), "method='nucleus' is not allowed"),
        (dict(texts="123"), "must be a list of strings"),
    ],
)
def test_translate_bad_input_is_one_clear_error(reverse: inference.Run, kwargs: dict, message: str) -> None:
    with pytest.raises(inference.InferenceError) as info:
        inference.translate(reverse, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_wrong_family_and_prompt_limits(reverse: inference.Run, charlm: inference.Run) -> None:
    with pytest.raises(inference.WrongFamilyError, match=r"generate\(\) needs a decoder_only model.*use translate"):
        inference.generate(reverse, ["123"])
    with pytest.raises(inference.WrongFamilyError, match=r"translate\(\) needs an encoder_decoder"):
        inference.translate(charlm, ["the"])
    with pytest.raises(inference.WrongFamilyError, match="classify"):
        inference.classify(charlm, ["the"])
    with pytest.raises(inference.InputTooLongError, match="at most 24"):
        inference.generate(charlm, ["x" * 30])
    with pytest.raises(inference.InferenceError, match=r"max_new_tokens=35 must be an integer in \[1, 34\]"):
        inference.generate(charlm, ["abcde"], max_new_tokens=35)  # max_len 40 - (bos + 5 chars)


def test_load_run_without_checkpoint(tmp_path: Path, reverse: inference.Run) -> None:
    with pytest.raises(inference.NoCheckpointError, match="does not exist"):
        inference.load_run(tmp_path / "missing")
    with pytest.raises(inference.NoCheckpointError, match=r"has no config\.json"):
        inference.load_run(tmp_path)
    (tmp_path / "config.json").write_text((reverse.workdir / "config.json").read_text())
    with pytest.raises(inference.NoCheckpointError, match="no checkpoint in"):
        inference.load_run(tmp_path)


# The commands ------------------------------------------------------------------------------


def test_cli_translate_generate_evaluate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, reverse: inference.Run, charlm: inference.Run
) -> None:
    workdir = str(reverse.workdir)
    code, out, _ = run_cli(capsys, "translate", "--workdir", workdir, "--text", "25103", "--text", "907")
    assert code == 0 and out.split() == ["30152", "709"]
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("4411\n8362\n")
    code, _, _ = run_cli(capsys, "translate", "--workdir", workdir, "--input", str(source), "--output", str(target))
    assert code == 0 and target.read_text() == "1144\n2638\n"

    report = tmp_path / "eval.json"
    code, out, _ = run_cli(capsys, "eval", "--workdir", workdir, "--split", "test", "--json", str(report))
    metrics = json.loads(report.read_text())
    assert code == 0 and "bleu=" in out and "chrf=" in out
    assert metrics["examples"] == 100 and metrics["exact_match"] >= 0.97 and metrics["split"] == "test"

    code, out, _ = run_cli(
        capsys, "generate", "--workdir", str(charlm.workdir), "--prompt", "lazy", "--max_new_tokens", "10"
    )
    assert code == 0 and out == inference.generate(charlm, ["lazy"], max_new_tokens=10)[0] + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("translate", "--text", "123"), "no checkpoint in"),
        (("evaluate",), "no checkpoint in"),
        (("generate", "--prompt", "hi"), "no checkpoint in"),
    ],
)
def test_cli_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, reverse: inference.Run, args: tuple, message: str
) -> None:
    (tmp_path / "config.json").write_text((reverse.workdir / "config.json").read_text())
    code, _, err = run_cli(capsys, *args, "--workdir", str(tmp_path))
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_wrong_family_and_bad_length(capsys: pytest.CaptureFixture[str], reverse: inference.Run) -> None:
    code, _, err = run_cli(capsys, "generate", "--workdir", str(reverse.workdir), "--prompt", "12")
    assert code == 2 and "needs a decoder_only model" in err and err.count("\n") == 1
    code, _, err = run_cli(
        capsys, "translate", "--workdir", str(reverse.workdir), "--text", "12", "--max_new_tokens", "1000000000"
    )
    assert code == 2 and "max_new_tokens=1000000000" in err and err.count("\n") == 1
