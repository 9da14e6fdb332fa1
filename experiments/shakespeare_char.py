"""Character-level GPT on tinyshakespeare: nanoGPT's "baby GPT" shape.

    jaxformer train --config experiments/shakespeare_char.py --workdir /tmp/shakespeare \
        --config.data.train_path=../shared/data/tinyshakespeare/input.txt

6 layers, 6 heads, 384 wide, block 256, dropout 0.2 (10.7M parameters). The file's last
10% is the validation split. `data.train_path` points at a local copy of the text; see
../shared/data/README.md (or download tinyshakespeare's input.txt yourself).
"""

from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.model.preset = "tiny-gpt2"
    config.model.d_model = 384
    config.model.num_heads = 6
    config.model.d_ff = 1536
    config.model.num_layers = 6
    config.model.max_len = 257
    config.model.dropout_rate = 0.2
    config.model.attention_dropout_rate = 0.2
    config.model.use_bias = False
    config.model.tie_embeddings = True

    config.data.source = "text"
    config.data.task = "lm"
    config.data.train_path = "../shared/data/tinyshakespeare/input.txt"
    config.data.text_unit = "file"
    config.data.holdout_fraction = 0.1
    config.data.tokenizer = "char"
    config.data.max_length = 257  # 256 predicted positions per row

    config.train.steps = 5000
    config.train.batch_size = 64
    config.train.learning_rate = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 100
    config.train.end_learning_rate_ratio = 0.1
    config.train.b2 = 0.99
    config.train.eps = 1e-8
    config.train.weight_decay = 0.1
    config.train.eval_every = 250
    config.train.eval_batches = 20
    config.train.log_every = 10
    config.checkpoint.every = 250
    return config
