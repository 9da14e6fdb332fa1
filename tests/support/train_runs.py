"""Running shipped experiments in process, as `jaxformer train` does, with the console captured."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from jaxformer import cli
from jaxformer.train.metrics import read_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO_ROOT / "experiments"

# A narrow one-layer model: compiles and trains in seconds whatever the experiment's shape.
SMALL_MODEL = (
    "--config.model.d_model=32",
    "--config.model.num_heads=2",
    "--config.model.d_ff=48",
    "--config.model.num_layers=1",
)


@dataclass
class Run:
    workdir: Path
    returncode: int
    stdout: str
    stderr: str
    records: list[dict]

    def train_records(self) -> list[dict]:
        return [r for r in self.records if "loss" in r]

    def eval_records(self) -> list[dict]:
        return [r for r in self.records if "eval_loss" in r]


def train(experiment: str, workdir: Path, *overrides: str) -> Run:
    """`jaxformer train --config experiments/<experiment> --workdir <workdir> <overrides>`, output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["train", "--config", str(EXPERIMENTS / experiment), "--workdir", str(workdir), *overrides])
    run = Run(workdir, code, out.getvalue(), err.getvalue(), read_metrics(workdir))
    assert code == 0, run.stderr[-3000:]
    return run
