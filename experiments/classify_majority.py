"""Encoder-only classification on a synthetic task: does a digit string hold more digits >= 5 than < 5?

    jaxformer train --config experiments/classify_majority.py --workdir /tmp/jaxformer-classify

A BERT-shaped (post-norm, learned positions, pooler) small encoder with a
classification head over the pooled first token; no download.
"""

from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.model.preset = "tiny-bert"
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.d_ff = 256
    config.model.num_layers = 2
    config.model.max_len = 32
    config.model.norm_position = "pre"
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0

    config.data.source = "synthetic"
    config.data.task = "classification"
    config.data.synthetic_task = "majority"
    config.data.synthetic_min_length = 8
    config.data.synthetic_max_length = 16
    config.data.tokenizer = "digits"
    config.data.max_length = 24

    config.train.steps = 1500
    config.train.batch_size = 64
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    config.train.eval_every = 500
    config.train.log_every = 50
    config.checkpoint.every = 500
    return config
