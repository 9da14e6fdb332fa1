"""Tiny Hugging Face checkpoints made by `transformers` itself (odd sizes), with a tokenizer.json, for
fine-tuning tests through `jaxformer train`; and experiment files written on the fly.

    gpt2_dir = tiny_gpt2(tmp_path / "gpt2")         # GPT2LMHeadModel + byte-level BPE tokenizer.json
    bert_dir = tiny_bert(tmp_path / "bert")         # BertModel + WordPiece tokenizer.json ([CLS] ... [SEP])
    experiment = write_experiment(tmp_path / "exp.py", {"model.init_from": str(gpt2_dir), ...})
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.paths import REPO_ROOT

WORDS = tuple(
    [
        "the",
        "king",
        "queen",
        "lord",
        "lady",
        "good",
        "night",
        "day",
        "sweet",
        "love",
        "speak",
        "hear",
        "come",
        "go",
        "now",
        "here",
        "there",
        "my",
        "thy",
        "what",
        "why",
        "when",
        "shall",
        "will",
        "not",
        "is",
        "was",
        "be",
        "of",
        "to",
        "and",
        "in",
        "with",
        "for",
    ]
)


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Lines of 4-9 words drawn with a fixed seed from a small, skewed vocabulary (a learnable LM task)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 10)), p=weights)) for _ in range(lines)]


def bpe_tokenizer(vocab_size: int, specials: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    return tokenizer


def wordpiece_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    return tokenizer


def tiny_gpt2(directory: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    tokenizer = bpe_tokenizer(301, ["<|endoftext|>"])
    eos = tokenizer.token_to_id("<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=64, n_embd=30, n_layer=2, n_head=3,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def tiny_llama(directory: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    tokenizer = bpe_tokenizer(299, ["<s>", "</s>"])
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=30, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        bos_token_id=tokenizer.token_to_id("<s>"), eos_token_id=tokenizer.token_to_id("</s>"),
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def tiny_bert(directory: Path, seed: int = 0, num_labels: int | None = None) -> Path:
    """A BertModel (or BertForSequenceClassification with `num_labels`) with a WordPiece tokenizer.json."""
    import torch
    import transformers

    tokenizer = wordpiece_tokenizer(307)
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels or 2,
    )  # fmt: skip
    torch.manual_seed(seed)
    cls = transformers.BertForSequenceClassification if num_labels else transformers.BertModel
    cls(config).eval().save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def tiny_roberta(directory: Path, seed: int = 0) -> Path:
    """A RobertaModel padding with id 1 (its position offset follows it) with a byte-level BPE tokenizer.json."""
    import torch
    import transformers

    tokenizer = bpe_tokenizer(303, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    config = transformers.RobertaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=37, max_position_embeddings=40, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.RobertaModel(config).eval().save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def tiny_bart(directory: Path, seed: int = 0) -> Path:
    """A BartForConditionalGeneration (pad 1, bos 0, eos 2 = decoder start) with a byte-level BPE tokenizer.json."""
    import torch
    import transformers

    tokenizer = bpe_tokenizer(305, ["<s>", "<pad>", "</s>", "<unk>"])
    config = transformers.BartConfig(
        vocab_size=tokenizer.get_vocab_size(), d_model=24, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=3, decoder_attention_heads=3, encoder_ffn_dim=37, decoder_ffn_dim=37,
        max_position_embeddings=40, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        forced_eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.BartForConditionalGeneration(config).eval().save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def peft_adapter(base_dir, out, targets, seed=0):
    """A LoRA adapter written by `peft` itself on `base_dir`, with non-zero B (so it changes the model)."""
    import peft
    import torch
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    model = peft.get_peft_model(base, peft.LoraConfig(r=3, lora_alpha=5, target_modules=targets))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "lora_B" in name:
                tensor.copy_(torch.randn_like(tensor) * 0.5)
    model.save_pretrained(out)
    return out


def write_experiment(path: Path, settings: dict[str, Any]) -> Path:
    """An experiment file: base_config() with `settings` ({"train.steps": 4, ...}) applied."""
    lines = ["from jaxformer.experiment import base_config", "", "", "def get_config():", "    config = base_config()"]
    for key, value in settings.items():
        lines.append(f"    config.{key} = {value!r}")
    lines.append("    return config")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lm_settings(init_from: str, train_path: Path, steps: int = 6) -> dict[str, Any]:
    """A causal-LM fine-tune on `train_path` (lines), tiny and fast, logging every step."""
    return {
        "model.init_from": init_from,
        "data.source": "text",
        "data.task": "lm",
        "data.train_path": str(train_path),
        "data.text_unit": "line",
        "data.holdout_fraction": 0.2,
        "data.max_length": 24,
        "train.steps": steps,
        "train.batch_size": 8,
        "train.learning_rate": 3e-3,
        "train.warmup_steps": 0,
        "train.schedule": "constant",
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.eval_batches": 1,
        "train.num_samples": 0,
        "train.progress": False,
        "checkpoint.every": steps,
    }


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m jaxformer.cli ARGS` in a subprocess from the repository root."""
    import os

    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "jaxformer.cli", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def losses(workdir: Path) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]
