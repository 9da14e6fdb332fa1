"""A one-minute smoke run: experiments/default.py shrunk to 1+1 layers of width 64 on 3-5 digit strings.

    jaxformer train --config experiments/tiny_reverse.py --workdir /tmp/jaxformer-tiny

Reverses held-out strings exactly after about 300 steps (about a minute on a 2-core CPU).
The tests and the demo screenshot train this run; use it to try the CLI, the demo app or a
new feature end to end before a real experiment.
"""

from pathlib import Path

from jaxformer.experiment import load


def get_config():
    config = load(Path(__file__).with_name("default.py"))
    config.model.d_model = 64
    config.model.d_ff = 128
    config.model.num_layers = 1
    config.model.num_decoder_layers = 1
    config.model.max_len = 8
    config.data.max_length = 8
    config.data.synthetic_min_length = 3
    config.data.synthetic_max_length = 5
    config.data.num_eval_examples = 100
    config.train.steps = 300
    config.train.learning_rate = 0.003
    config.train.warmup_steps = 30
    return config
