"""WMT14 English -> German, Transformer base (Vaswani et al. 2017), from the TFDS catalog.

    jaxformer train --config experiments/wmt14_transformer_base.py --workdir gs://.../wmt14

Needs the prepared TFDS dataset `wmt14_translate/de-en` (set `data.tfds_data_dir`, or
`data.tfds_download=True` on a machine with internet). Shared 37k sentencepiece
vocabulary, label smoothing 0.1, Adam(0.9, 0.98, 1e-9) with the inverse-square-root
schedule and 4000 warm-up steps, ~25k source + 25k target tokens per batch.
"""

from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.model.preset = "transformer-base"
    config.model.max_len = 256

    config.data.source = "tfds"
    config.data.task = "seq2seq"
    config.data.tfds_name = "wmt14_translate/de-en"
    config.data.source_field = "en"
    config.data.target_field = "de"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.test_split = "test"
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 37000
    config.data.tokenizer_train_examples = 1_000_000
    config.data.max_length = 256
    config.data.pack = True

    config.train.steps = 100_000
    config.train.batch_size = 96  # packed rows of 256 + 256 tokens ~ 25k tokens per side
    config.train.learning_rate = 1.0
    config.train.schedule = "noam"
    config.train.warmup_steps = 4000
    config.train.label_smoothing = 0.1
    config.train.eval_every = 5000
    config.train.eval_batches = 50
    config.checkpoint.every = 2000
    config.mesh.data = -1
    return config
