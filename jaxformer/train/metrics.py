"""Where metrics go: `metrics.jsonl` (one JSON object per record), TensorBoard events, the console.

metrics.jsonl format (stable): each line is {"step": int, <name>: float, ...}. Training records
carry loss, accuracy, perplexity, learning_rate, grad_norm, tokens_per_sec, step_time; evaluation
records carry eval_loss, eval_accuracy, eval_perplexity (and task metrics such as eval_bleu).
A run that starts at step s (resumed from the checkpoint of step s, or s=0) first drops the
records of steps after s, which it is about to log again, so each step appears once.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter
from tqdm import tqdm


def perplexity(mean_loss: float) -> float:
    """exp(loss), capped to stay finite in JSON."""
    return math.exp(min(mean_loss, 50.0))


class MetricsWriter:
    """Writes records to the workdir and the console. Only the writing process (index 0) writes."""

    def __init__(
        self, workdir: str | Path, total_steps: int, initial_step: int = 0, enabled: bool = True, progress: bool = True
    ):
        self.enabled = enabled
        self.workdir = Path(workdir)
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        drop_records_after(self.workdir / "metrics.jsonl", initial_step)
        self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        # A resumed run re-logs the steps after its checkpoint: TensorBoard hides the earlier events
        # from the purge step on, as metrics.jsonl drops those records.
        purge_step = initial_step + 1 if initial_step > 0 else None
        # The event file is named by the second it was opened: a restart within the same second
        # (a quick kill and resume) would overwrite the previous file without this suffix.
        suffix = f".{os.getpid()}.{initial_step}"
        self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=purge_step, filename_suffix=suffix)
        if progress:
            self._bar = tqdm(
                total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        assert self._jsonl is not None and self._tb is not None
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in record.items():
            if name != "step":
                self._tb.add_scalar(name, value, step)
        self._tb.flush()
        if self._bar is not None:
            shown = {
                k: f"{v:.4g}"
                for k, v in record.items()
                if k in ("loss", "accuracy", "eval_loss", "eval_accuracy", "learning_rate")
            }
            self._bar.set_postfix(shown, refresh=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def drop_records_after(path: Path, step: int) -> None:
    """Keep only the records of steps <= `step` in the metrics file at `path` (and no torn last line)."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    steps = [_step_of(line) for line in lines]
    kept = [line for line, at in zip(lines, steps, strict=True) if at is not None and at <= step]
    if len(kept) == len(lines) and (not text or text.endswith("\n")):
        return
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(partial, path)


def _step_of(line: str) -> int | None:
    """The step of one metrics.jsonl line, None if it is not a complete record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """All records of a workdir's metrics.jsonl."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
