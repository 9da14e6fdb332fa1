"""experiments/finetune_minilm_classify.py with LoRA: the same speakers task, data, steps and batches,
the MiniLM weights frozen, rank-8 adapters on every attention and MLP projection, and the new
`classifier` head and the [CLS] `pooler` in front of it trained in full (`lora.train_modules`,
PEFT's modules_to_save).

    jaxformer train --config experiments/finetune_minilm_classify_lora.py --workdir /tmp/minilm-speakers-lora

LoRA updates start at zero and move the weights less per step than full fine-tuning, so the
learning rate is 10x (1.5e-3), as is usual for LoRA.

Why the pooler is trained: the classifier reads the pooled [CLS] vector, tanh(W h[CLS] + b), and
sentence-transformers never trained that dense layer (it mean-pools); frozen, it stands between the
adapted encoder and the head. With only the classifier trained in full, LoRA ended 3.3 points below
full fine-tuning; with the pooler as well (148k more trained parameters), within 1 point (README
"Fine-tuning", benchmarks/results/finetune_minilm_classify.json).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "finetune_minilm_classify", os.path.join(os.path.dirname(os.path.abspath(__file__)), "finetune_minilm_classify.py")
)
_full = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_full)


def get_config():
    config = _full.get_config()
    config.lora.rank = 8
    config.lora.alpha = 16.0
    config.lora.dropout = 0.0
    config.lora.targets = ["query", "key", "value", "out", "up", "down"]
    config.lora.train_modules = ["classifier", "pooler"]
    config.train.learning_rate = 1.5e-3
    return config
