"""nanoGPT's CPU "baby GPT" on tinyshakespeare, character level (issue 23's speed recipe).

    jaxformer train --config experiments/shakespeare_baby.py --workdir /tmp/baby

The recipe nanoGPT's README gives for a CPU (`train.py config/train_shakespeare_char.py
--device=cpu --compile=False --eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4
--n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`): 4 layers,
4 heads, 128 wide, block 64, batch 12, 2000 steps, learning rate 1e-3 cosine to 1e-4 after a
100-step warm-up, AdamW b2 0.99 and weight decay 0.1, gradient clip 1.0, no dropout, no biases,
tied embeddings; evaluation every 250 steps over 20 batches. The file's last 10% is the
validation split. `python -m benchmarks.baby_train` times it against a PyTorch loop.

Derived from experiments/shakespeare_char.py (the same data and optimizer; this file sets the
smaller shape, batch and schedule).
"""

from pathlib import Path

from jaxformer import experiment


def get_config():
    config = experiment.load(Path(__file__).with_name("shakespeare_char.py"))
    config.model.update(
        d_model=128, num_heads=4, d_ff=512, num_layers=4, max_len=65, dropout_rate=0.0, attention_dropout_rate=0.0
    )
    config.data.max_length = 65  # 64 predicted positions per row
    config.train.update(steps=2000, batch_size=12, grad_clip=1.0, log_every=50)
    config.checkpoint.every = 250  # nanoGPT saves at each evaluation that improves
    # Not part of the recipe's math: on a CPU, split the host into 2 XLA devices and train data-parallel
    # over them (batch 6 + 6), so both cores run the small kernels at once (mesh.cpu_devices in the
    # README). No effect on a GPU/TPU host; set 0 for JAX's single CPU device.
    config.mesh.cpu_devices = 2
    return config
