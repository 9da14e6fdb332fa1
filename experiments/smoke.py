"""The smallest end-to-end run: a 1+1-layer tiny-transformer on synthetic digit strings of up to 8 tokens.

    jaxformer train --config experiments/smoke.py --workdir /tmp/jaxformer-smoke

Twenty steps of batch 8 with a checkpoint every 10: seconds on a CPU. It exercises the
mechanics, not the model: checkpoints, kill and resume, multi-host launches. The kill-storm
benchmark and the checkpoint, resume and multi-host tests start from this file and change
what they need on the command line.
"""

from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.seed = 3
    config.model.preset = "tiny-transformer"
    config.model.num_layers = 1  # small programs compile fast
    config.model.num_decoder_layers = 1
    config.data.source = "synthetic"
    config.data.synthetic_max_length = 8
    config.data.num_eval_examples = 8
    config.train.steps = 20
    config.train.batch_size = 8
    config.train.warmup_steps = 3
    config.train.log_every = 1
    config.train.eval_every = 0
    config.train.eval_batches = 1
    config.train.num_samples = 0
    config.train.progress = False
    config.checkpoint.every = 10
    return config
