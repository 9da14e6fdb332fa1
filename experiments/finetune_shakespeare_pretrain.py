"""A small byte-level GPT-2 pre-trained on tinyshakespeare: the base that
experiments/finetune_shakespeare_multi30k_lora.py imports from Hugging Face files.

    jaxformer train --config experiments/finetune_shakespeare_pretrain.py --workdir /tmp/shakespeare-byte
    jaxformer export --workdir /tmp/shakespeare-byte --hf /tmp/shakespeare-byte-hf

4 layers x 128 wide, 4 heads, block 128, UTF-8 bytes (vocab 259: any text encodes, so the model
carries over to other data without a vocabulary of its own). Short on purpose (minutes on a 2-core
CPU); the file's last 10% is the validation split.
"""

from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.model.preset = "tiny-gpt2"
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.d_ff = 512
    config.model.num_layers = 4
    config.model.max_len = 129
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0
    config.model.tie_embeddings = True

    config.data.source = "text"
    config.data.task = "lm"
    config.data.train_path = "../shared/data/tinyshakespeare/input.txt"
    config.data.text_unit = "file"
    config.data.holdout_fraction = 0.1
    config.data.tokenizer = "byte"
    config.data.max_length = 129  # 128 predicted positions per row

    config.train.steps = 300
    config.train.batch_size = 32
    config.train.learning_rate = 2e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 30
    config.train.end_learning_rate_ratio = 0.1
    config.train.b2 = 0.99
    config.train.weight_decay = 0.1
    config.train.eval_every = 150
    config.train.eval_batches = 10
    config.train.log_every = 25
    config.checkpoint.every = 150
    return config
