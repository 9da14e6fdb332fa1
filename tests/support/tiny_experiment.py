"""A tiny synthetic seq2seq experiment file for `jaxformer train` subprocess tests (multi-host, CPU devices).

A fixed training set without shuffling, so runs on different device and process counts build every
global batch from the same examples and log comparable losses.
"""

from __future__ import annotations

from pathlib import Path

TINY_EXPERIMENT = """
from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.model.update(preset="tiny-transformer", num_layers=1, num_decoder_layers=1)
    config.data.update(num_train_examples=256, num_eval_examples=32, shuffle=False, prefetch=0)
    config.train.update(
        steps=3, batch_size=16, learning_rate=3e-3, schedule="constant", warmup_steps=0,
        log_every=1, eval_every=0, eval_batches=1, num_samples=0, progress=False,
    )
    config.checkpoint.update(every=0, async_save=False)
    return config
"""


def write_tiny_experiment(directory: Path) -> Path:
    """The experiment file, written into `directory`."""
    path = directory / "tiny_experiment.py"
    path.write_text(TINY_EXPERIMENT)
    return path
