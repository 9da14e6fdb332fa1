"""Hugging Face interop: import GPT-2, BERT (MiniLM), RoBERTa / XLM-RoBERTa, DistilBERT, T5, Marian, Llama and
Gemma family checkpoints; export them back.

    model, params, config = jaxformer.hf.load("path/to/hf_model_dir")
    model, params, config = jaxformer.hf.load("Qwen/Qwen3-0.6B", revision="main")   # through the Hub cache
    model, params, config = jaxformer.hf.load(path, mesh=mesh)      # each tensor straight into its NamedSharding
    model, params, config = jaxformer.hf.load(path, dtype="auto")   # keep the stored dtype (bf16)
    jaxformer.hf.save(config, params, "out_dir", tokenizer_dir="path/to/hf_model_dir", max_shard_size="2GB")
    jaxformer.hf.save(config, params, "out_dir", dtype="bfloat16")  # default: each parameter's own dtype
    tokenizer = jaxformer.hf.load_tokenizer("path/to/hf_model_dir")
    config, params = jaxformer.hf.finetune_init("path", encoder_head="classification", num_classes=2)
    jaxformer.hf.save(config, params, "out_dir", model_type="xlm-roberta")  # where the fields cannot tell

One mapping table per architecture (gpt2.py, bert.py, roberta.py, distilbert.py, t5.py, marian.py, ...); shared
machinery in common.py (transforms, rules), io.py (files) and convert.py.
NumPy/safetensors only: torch is needed just for pytorch_model.bin (allow_pickle=True).
"""

from jaxformer.hf.convert import SUPPORTED_MODEL_TYPES, finetune_init, load, read_special_tokens, save
from jaxformer.hf.hub import HubError
from jaxformer.hf.tokenizer import load_tokenizer

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "HubError",
    "finetune_init",
    "load",
    "load_tokenizer",
    "read_special_tokens",
    "save",
]
