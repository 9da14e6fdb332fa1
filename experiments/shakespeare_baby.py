"""nanoGPT's CPU "baby GPT" on tinyshakespeare, character level (issue 23's speed recipe).

    jaxformer train --config experiments/shakespeare_baby.py --workdir /tmp/baby

The recipe nanoGPT's README gives for a CPU (`train.py config/train_shakespeare_char.py
--device=cpu --compile=False --eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4
--n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`): 4 layers,
4 heads, 128 wide, block 64, batch 12, 2000 steps, learning rate 1e-3 cosine to 1e-4 after a
100-step warm-up, AdamW b2 0.99 and weight decay 0.1, gradient clip 1.0, no dropout, no biases,
tied embeddings; evaluation every 250 steps over 20 batches. The file's last 10% is the
validation split. `python -m benchmarks.baby_train` times it against a PyTorch loop.
"""

from jaxformer.experiment import base_config


def get_config():
    config = base_config()
    config.model.preset = "tiny-gpt2"
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.d_ff = 512
    config.model.num_layers = 4
    config.model.max_len = 65
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0
    config.model.use_bias = False
    config.model.tie_embeddings = True

    config.data.source = "text"
    config.data.task = "lm"
    config.data.train_path = "../shared/data/tinyshakespeare/input.txt"
    config.data.text_unit = "file"
    config.data.holdout_fraction = 0.1
    config.data.tokenizer = "char"
    config.data.max_length = 65  # 64 predicted positions per row

    config.train.steps = 2000
    config.train.batch_size = 12
    config.train.learning_rate = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 100
    config.train.end_learning_rate_ratio = 0.1
    config.train.b2 = 0.99
    config.train.eps = 1e-8
    config.train.weight_decay = 0.1
    config.train.grad_clip = 1.0
    config.train.eval_every = 250
    config.train.eval_batches = 20
    config.train.log_every = 50
    config.checkpoint.every = 250  # nanoGPT saves at each evaluation that improves
    return config
