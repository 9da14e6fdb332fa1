"""Issue 20: the run's tokenizer is stored in the workdir and is the one every later stage uses.

Each case trains a tiny decoder-only LM for a few steps through `jaxformer.cli.main`, then changes
what the tokenizer is built from and checks that resuming is refused with one line while evaluate
still uses the stored tokenizer (the same test perplexity as before the change).
"""

from __future__ import annotations

import json

import pytest

from jaxformer import cli
from jaxformer.data import tokenizer_store

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
TEST = "a lazy dog jumps over the quick brown fox. " * 4


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _train(capsys, tmp_path, steps: int, *extra: str) -> tuple[int, str, str]:
    return _cli(
        capsys,
        "train",
        "--config",
        "experiments/smoke.py",
        "--workdir",
        str(tmp_path / "run"),
        "--config.model.preset=tiny-gpt2",
        "--config.model.d_model=16",
        "--config.model.num_heads=2",
        "--config.model.d_ff=24",
        "--config.model.num_layers=1",
        "--config.model.max_len=33",
        "--config.data.source=text",
        "--config.data.task=lm",
        "--config.data.max_length=33",
        f"--config.data.train_path={tmp_path / 'train.txt'}",
        f"--config.data.eval_path={tmp_path / 'test.txt'}",
        f"--config.data.test_path={tmp_path / 'test.txt'}",
        "--config.data.text_unit=line",
        f"--config.train.steps={steps}",
        "--config.train.batch_size=4",
        "--config.checkpoint.every=2",
        *extra,
    )


def _evaluate(capsys, tmp_path) -> float:
    out_json = tmp_path / "eval.json"
    code, _, err = _cli(capsys, "evaluate", "--workdir", str(tmp_path / "run"), "--json", str(out_json))
    assert code == 0, err
    return json.loads(out_json.read_text())["perplexity"]


def _write_data(tmp_path, text: str = TEXT) -> None:
    (tmp_path / "train.txt").write_text("\n".join(text[i : i + 30] for i in range(0, len(text), 30)) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(TEST[i : i + 30] for i in range(0, len(TEST), 30)) + "\n")


def _hf_tokenizer(path, words: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "[UNK]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def test_char_alphabet_change_refused_on_resume_and_evaluate_keeps_stored(capsys, tmp_path):
    _write_data(tmp_path)
    code, _, err = _train(capsys, tmp_path, 2, "--config.data.tokenizer=char")
    assert code == 0, err
    stored = json.loads((tmp_path / "run" / "tokenizer" / tokenizer_store.MANIFEST).read_text())
    assert stored["kind"] == "char" and "q" in stored["alphabet"]
    before = _evaluate(capsys, tmp_path)
    _write_data(tmp_path, TEXT.replace("q", "Q"))  # same vocabulary size, every id after 'Q' shifts
    config_before = (tmp_path / "run" / "config.json").read_text()
    code, _, err = _train(capsys, tmp_path, 4, "--config.data.tokenizer=char")
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "characters changed" in line and "'q'" in line and "'Q'" in line, line
    assert (tmp_path / "run" / "config.json").read_text() == config_before  # a refused resume changes nothing
    assert _evaluate(capsys, tmp_path) == pytest.approx(before, rel=1e-6)  # the stored alphabet, not the new one


@pytest.mark.slow  # ~20 s each; the char-alphabet test above stores and reuses a tokenizer by default
@pytest.mark.parametrize("kind", ["byte", "digits"])
def test_fixed_tokenizers_are_stored(capsys, tmp_path, kind):
    if kind == "digits":
        code, _, err = _cli(capsys, "train", "--config", "experiments/smoke.py", "--workdir", str(tmp_path / "run"),
                            "--config.train.steps=2", "--config.checkpoint.every=2")  # fmt: skip
    else:
        _write_data(tmp_path)
        code, _, err = _train(capsys, tmp_path, 2, f"--config.data.tokenizer={kind}")
    assert code == 0, err
    loaded = tokenizer_store.load(tmp_path / "run")
    assert loaded is not None and loaded.kind == kind


@pytest.mark.slow  # ~14 s; the char-alphabet test above covers the refusal by default
def test_hf_tokenizer_file_change_refused_and_stored_copy_used(capsys, tmp_path):
    _write_data(tmp_path)
    words = [*sorted(set(TEXT.replace(".", " ").split()) | set(TEST.replace(".", " ").split())), "."]
    file = tmp_path / "tok.json"
    _hf_tokenizer(file, words)
    options = ("--config.data.tokenizer=hf", f"--config.data.tokenizer_path={file}")
    code, _, err = _train(capsys, tmp_path, 2, *options)
    assert code == 0, err
    before = _evaluate(capsys, tmp_path)
    _hf_tokenizer(file, list(reversed(words)))  # same size, other ids
    code, _, err = _train(capsys, tmp_path, 4, *options)
    assert code == 2 and "hf tokenizer file changed" in err and "\n" not in err.strip(), err
    assert _evaluate(capsys, tmp_path) == pytest.approx(before, rel=1e-6)


@pytest.mark.slow  # ~15 s; the char-alphabet test above stores and reuses a tokenizer by default
def test_sentencepiece_model_is_stored_and_used_when_the_cache_is_gone(capsys, tmp_path):
    _write_data(tmp_path)
    code, _, err = _train(capsys, tmp_path, 2, "--config.data.tokenizer=sentencepiece", "--config.data.vocab_size=300")
    assert code == 0, err
    before = _evaluate(capsys, tmp_path)
    for cached in (tmp_path / "run" / "tokenizer").glob("spm-*.model"):
        cached.unlink()  # the cache is gone: evaluate must not retrain one (it would differ) but use the stored copy
    assert _evaluate(capsys, tmp_path) == pytest.approx(before, rel=1e-6)
    assert not list((tmp_path / "run" / "tokenizer").glob("spm-*.model"))
