"""Sequence-to-sequence from a checkpoint: a Multi30k English -> German encoder-decoder trained by
experiments/multi30k_transformer.py, continued from its jaxformer workdir (`model.init_from=<workdir>`)
with a fresh optimizer and a constant, lower learning rate.

    jaxformer train --config experiments/multi30k_transformer.py --workdir /tmp/multi30k \
        --config.model.d_model=128 --config.model.d_ff=512 --config.model.num_layers=2 \
        --config.model.num_decoder_layers=2 --config.train.steps=150 --config.train.batch_size=32 \
        --config.train.warmup_steps=100 --config.train.eval_every=150 --config.checkpoint.every=150
    MULTI30K_WORKDIR=/tmp/multi30k \
        jaxformer train --config experiments/finetune_multi30k_seq2seq.py --workdir /tmp/multi30k-continued

(the first command is a short version of that experiment; its full 800 steps work the same way).
`model.init_from` is the env var MULTI30K_WORKDIR (default /tmp/multi30k), or pass
`--config.model.init_from=DIR`. The architecture and the SentencePiece tokenizer come from the
workdir (no `data.tokenizer` here). `train.eval_at_start` records the imported model's validation
loss and BLEU (greedy, the first held-out sentences) as step 0, before any update.
"""

import os

from jaxformer.experiment import base_config

MULTI30K = "../shared/data/multi30k"


def get_config():
    config = base_config()
    config.model.init_from = os.environ.get("MULTI30K_WORKDIR", "/tmp/multi30k")

    config.data.source = "parallel"
    config.data.task = "seq2seq"
    config.data.train_path = f"{MULTI30K}/train"
    config.data.eval_path = f"{MULTI30K}/val"
    config.data.test_path = f"{MULTI30K}/test_2016_flickr"
    config.data.source_suffix = ".en"
    config.data.target_suffix = ".de"
    config.data.max_length = 128
    config.data.pack = True

    config.train.steps = 60
    config.train.batch_size = 32
    config.train.learning_rate = 5e-4
    config.train.schedule = "constant"
    config.train.warmup_steps = 10
    config.train.label_smoothing = 0.1
    config.train.eval_at_start = True
    config.train.eval_every = 60
    config.train.num_samples = 2
    config.train.log_every = 20
    config.checkpoint.every = 60
    return config
