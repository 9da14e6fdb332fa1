"""`benchmarks.baby_train` (issue 23's baby-GPT timing) and `baby_step_split` still run, on a few steps.

The numbers of so short a run mean nothing; the test checks the report's structure: both loops
timed, the evaluations recorded at the steps asked for, and the ratios the issue's targets use.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from support.paths import REPO_ROOT

pytest.importorskip("torch")
pytest.importorskip("transformers")


from benchmarks import baby_step_split, baby_train

# The experiment splits the CPU into 2 devices (mesh.cpu_devices=2); in a pytest worker that has not
# started JAX yet that would change the devices of every later test in it. tests/train/test_cpu_devices.py
# checks the setting in its own process.
KEEP_DEVICES = "mesh.cpu_devices=0"
TEXT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def positive(x: object) -> bool:
    return isinstance(x, float | int) and math.isfinite(x) and x > 0


@pytest.mark.slow
@pytest.mark.skipif(not TEXT.exists(), reason="tinyshakespeare is not beside the worktree (../shared/data)")
def test_baby_train_reports_both_loops_and_the_ratios(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the experiment names its data relative to the repository root
    overrides = [
        "train.steps=20",
        "train.eval_every=10",
        "train.eval_batches=2",
        "train.log_every=5",
        "checkpoint.every=10",
        f"data.train_path={TEXT}",
        KEEP_DEVICES,
    ]
    results = baby_train.run(overrides, torch_steps=5, workdir=tmp_path, rounds=2, steps=3)
    jax_row, torch_row = results["jaxformer"], results["torch_loop"]
    assert jax_row["steps"] == 20 and positive(jax_row["wall_s"]) and positive(jax_row["median_step_ms"])
    assert [step for step, _ in jax_row["eval_losses"]] == [10, 20]
    assert all(positive(loss) for _, loss in jax_row["eval_losses"])
    assert jax_row["final_val_loss"] == pytest.approx(jax_row["eval_losses"][-1][1], abs=1e-3)
    assert torch_row["steps_timed"] == 5 and positive(torch_row["median_step_ms"])
    assert math.log(65) - 1.0 < torch_row["first_loss"] < math.log(65) + 1.0  # near uniform over the 65 chars
    alternating = results["alternating"]
    assert len(alternating["jaxformer_rounds_ms"]) == len(alternating["torch_rounds_ms"]) == 2
    assert all(positive(alternating[k]) for k in ("jaxformer_step_ms", "torch_step_ms", "speedup_vs_torch_loop"))
    assert alternating["speedup_vs_torch_loop"] == pytest.approx(
        alternating["torch_step_ms"] / alternating["jaxformer_step_ms"], rel=1e-2
    )
    ratios = results["ratios"]
    assert positive(ratios["speedup_vs_torch_loop"]) and positive(ratios["step_vs_nanogpt"])
    assert set(ratios["targets"]) == {"step_vs_nanogpt", "wall_to_target_vs_nanogpt", "speedup_vs_torch_loop"}


@pytest.mark.slow
@pytest.mark.skipif(not TEXT.exists(), reason="tinyshakespeare is not beside the worktree (../shared/data)")
def test_baby_step_split_times_the_step_alone_and_fed(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    result = baby_step_split.split([f"data.train_path={TEXT}", KEEP_DEVICES], steps=3)
    assert set(result) == {"fixed_step_ms", "fed_step_ms", "fetch_ms"}
    assert all(positive(v) for v in result.values())
