"""Multi30k English -> German with a small Transformer (the 2017 architecture, scaled down).

    jaxformer train --config experiments/multi30k_transformer.py --workdir /tmp/multi30k

Reads the raw parallel files `train.{en,de}.gz`, `val.*` and `test_2016_flickr.*` under
`data.train_path`'s folder (default: ../shared/data/multi30k, see its README), trains a
joint 8k sentencepiece vocabulary on the training text, packs examples into rows and
reports BLEU (sacrebleu) with greedy decoding at every evaluation.
"""

from jaxformer.experiment import base_config

MULTI30K = "../shared/data/multi30k"


def get_config():
    config = base_config()
    config.model.preset = "transformer-base"
    config.model.d_model = 256
    config.model.num_heads = 4
    config.model.d_ff = 1024
    config.model.num_layers = 3
    config.model.num_decoder_layers = 3
    config.model.max_len = 128
    config.model.norm_position = "pre"
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1

    config.data.source = "parallel"
    config.data.task = "seq2seq"
    config.data.train_path = f"{MULTI30K}/train"
    config.data.eval_path = f"{MULTI30K}/val"
    config.data.test_path = f"{MULTI30K}/test_2016_flickr"
    config.data.source_suffix = ".en"
    config.data.target_suffix = ".de"
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 8000
    config.data.max_length = 128
    config.data.pack = True

    config.train.steps = 800  # ~14 epochs of Multi30k; ~4 s a step on a 2-core CPU
    config.train.batch_size = 64  # packed rows of 128 source + 128 target tokens
    config.train.learning_rate = 0.7  # x d_model^-0.5 x min(s^-0.5, s warmup^-1.5)
    config.train.schedule = "noam"
    config.train.warmup_steps = 400
    config.train.label_smoothing = 0.1
    config.train.eval_every = 200
    config.train.log_every = 20
    config.checkpoint.every = 200
    return config
