"""LoRA across datasets: the byte-level GPT-2 pre-trained here on tinyshakespeare, imported from its
Hugging Face export, LoRA-tuned on Multi30k's English image captions as plain text (causal LM).

    jaxformer train --config experiments/finetune_shakespeare_pretrain.py --workdir /tmp/shakespeare-byte
    jaxformer export --workdir /tmp/shakespeare-byte --hf /tmp/shakespeare-byte-hf
    SHAKESPEARE_HF=/tmp/shakespeare-byte-hf \
        jaxformer train --config experiments/finetune_shakespeare_multi30k_lora.py --workdir /tmp/multi30k-lora

`model.init_from` is the env var SHAKESPEARE_HF (default /tmp/shakespeare-byte-hf), or pass
`--config.model.init_from=DIR`. The export holds no tokenizer.json, so the run names its tokenizer:
`data.tokenizer="byte"`, the one the base was trained with. One caption per line of
`train.en.gz`; validation is `val.en.gz` (the whole split, 1014 captions). `train.eval_at_start`
evaluates the imported model before the first step, so metrics.jsonl holds the validation
perplexity before (step 0) and after.
"""

import os

from jaxformer.experiment import base_config

MULTI30K = "../shared/data/multi30k"


def get_config():
    config = base_config()
    config.model.init_from = os.environ.get("SHAKESPEARE_HF", "/tmp/shakespeare-byte-hf")
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0

    config.lora.rank = 8
    config.lora.alpha = 16.0
    config.lora.dropout = 0.0
    config.lora.targets = ["query", "key", "value", "out", "up", "down"]

    config.data.source = "text"
    config.data.task = "lm"
    config.data.train_path = f"{MULTI30K}/train.en.gz"
    config.data.eval_path = f"{MULTI30K}/val.en.gz"
    config.data.text_unit = "line"
    config.data.tokenizer = "byte"
    config.data.max_length = 129
    config.data.pack = True

    config.train.steps = 200
    config.train.batch_size = 32
    config.train.learning_rate = 3e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 20
    config.train.end_learning_rate_ratio = 0.1
    config.train.eval_at_start = True
    config.train.eval_every = 100
    config.train.eval_batches = 0
    config.train.num_samples = 0
    config.train.log_every = 25
    config.checkpoint.every = 100
    return config
