"""Every OSError kind an output path can meet, through the real CLI in a subprocess: one line with the fix.

Read-only disks, missing permission and full disks come from the LD_PRELOAD shim of support/fault_fs.py
(the libc calls fail as the kernel would answer, so this runs as root too); the path kinds (exists, is a
directory, not a directory, missing) are real paths. Each case: exit 2, stderr is one `error:` line naming
the path or flag and what to do. Also: a model.vocab_size smaller than the data tokenizer stops training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fault_fs import fault_env, one_error_line, run_cli
from support.inference_runs import trained_run
from support.paths import REPO_ROOT

SMOKE = str(REPO_ROOT / "experiments" / "smoke.py")
SHORT = ("--config.train.steps=2", "--config.checkpoint.every=2")


@pytest.fixture(scope="module")
def reverse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory, "reverse")


# (name, argv with {dir} and {run}, fault kind or None, directory under {dir} the fault applies to, fragments)
CASES = [
    ("train EROFS", ("train", "--config", SMOKE, "--workdir", "{dir}/d/run", *SHORT), "EROFS", "d",
     ("Read-only file system", "--workdir", "writable disk")),
    ("train EACCES", ("train", "--config", SMOKE, "--workdir", "{dir}/d/run", *SHORT), "EACCES", "d",
     ("permission denied", "--workdir")),
    ("train ENOSPC", ("train", "--config", SMOKE, "--workdir", "{dir}/d/run", *SHORT), "ENOSPC", "d",
     ("No space left", "free", "another disk")),
    ("export EROFS", ("export", "--workdir", "{run}", "--out", "{dir}/d/out"), "EROFS", "d",
     ("Read-only file system", "--out")),
    ("export ENOSPC", ("export", "--workdir", "{run}", "--out", "{dir}/d/out"), "ENOSPC", "d",
     ("No space left", "need about", "--out")),
    ("export EEXIST", ("export", "--workdir", "{run}", "--out", "{dir}/file"), None, "",
     ("file", "--out")),
    ("evaluate --json EROFS", ("evaluate", "--workdir", "{run}", "--json", "{dir}/d/m.json"), "EROFS", "d",
     ("--json", "Read-only file system", "printed above")),
    ("evaluate --json ENOSPC", ("evaluate", "--workdir", "{run}", "--json", "{dir}/d/m.json"), "ENOSPC", "d",
     ("--json", "No space left", "printed above")),
    ("translate --output EACCES", ("translate", "--workdir", "{run}", "--text", "12", "--output", "{dir}/d/t.txt"),
     "EACCES", "d", ("--output", "Permission denied", "printed above")),
    ("translate --output ENOSPC", ("translate", "--workdir", "{run}", "--text", "12", "--output", "{dir}/d/t.txt"),
     "ENOSPC", "d", ("--output", "No space left", "printed above")),
    ("translate --output ENOTDIR", ("translate", "--workdir", "{run}", "--text", "12", "--output", "{dir}/file/t"),
     None, "", ("--output", "does not exist")),
    ("translate --input ENOENT", ("translate", "--workdir", "{run}", "--input", "{dir}/none.txt"), None, "",
     ("none.txt", "No such file", "check the path")),
    ("translate --input EISDIR", ("translate", "--workdir", "{run}", "--input", "{dir}"), None, "",
     ("is a directory", "--input")),
]  # fmt: skip


# The default suite runs three cases (a fault shim, a real path kind, a missing input); all run in the slow suite (~10 s each).
DEFAULT = {"train ENOSPC", "export EEXIST", "translate --input ENOENT"}


@pytest.mark.parametrize(
    ("argv", "kind", "under", "fragments"),
    [pytest.param(*c[1:], id=c[0], marks=() if c[0] in DEFAULT else pytest.mark.slow) for c in CASES],
)
def test_os_error_is_one_line_with_the_fix(
    tmp_path: Path, reverse: Path, argv: tuple[str, ...], kind: str | None, under: str, fragments: tuple[str, ...]
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "file").write_text("mine\n")
    args = [a.replace("{dir}", str(tmp_path)).replace("{run}", str(reverse)) for a in argv]
    faults = fault_env(tmp_path / under, kind) if kind else None
    done = run_cli(*args, faults=faults)
    assert done.returncode == 2, done.stderr[-4000:]
    one_error_line(done.stderr, *fragments)
    assert (tmp_path / "file").read_text() == "mine\n"


@pytest.mark.slow  # ~21 s: two CLI trainings
def test_model_vocab_smaller_than_the_tokenizer_stops_before_training(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers  # the [hf] extra's tokenizers

    words = [f"w{i}" for i in range(40)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "train.txt").write_text((" ".join(words) + "\n") * 20)
    size = 41 + 3  # its ids + jaxformer's pad/bos/eos
    flags = (
        "--config.model.preset=tiny-gpt2", "--config.model.num_layers=1", "--config.model.max_len=32",
        "--config.data.source=text", "--config.data.task=lm", "--config.data.tokenizer=hf",
        f"--config.data.tokenizer_path={tmp_path / 'tokenizer.json'}", f"--config.data.train_path={tmp_path / 'train.txt'}",
        "--config.data.max_length=16", "--config.data.holdout_fraction=0.2", "--config.train.steps=1",
        "--config.train.batch_size=2", "--config.train.num_samples=0",
    )  # fmt: skip
    done = run_cli(
        "train", "--config", SMOKE, "--workdir", str(tmp_path / "run"), *flags, "--config.model.vocab_size=20"
    )
    assert done.returncode == 2, done.stderr[-4000:]
    one_error_line(done.stderr, "model.vocab_size=20", f"{size} ids", f"at least {size}")
    assert not list((tmp_path / "run").glob("checkpoints/[0-9]*"))  # nothing trained
    ok = run_cli(
        "train", "--config", SMOKE, "--workdir", str(tmp_path / "ok"), *flags, f"--config.model.vocab_size={size}"
    )
    assert ok.returncode == 0, ok.stderr[-4000:]
    assert json.loads((tmp_path / "ok" / "model_config.json").read_text())["vocab_size"] == size
