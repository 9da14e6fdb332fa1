"""The tokenizer of a Hugging Face model directory, through the `tokenizers` library (tokenizer.json).

Ids are the model's own (no shifting), so they feed an imported model directly.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from jaxformer.errors import CheckpointNotFoundError
from jaxformer.hf import files


def load_tokenizer(path: str | Path) -> Tokenizer:
    """`tokenizers.Tokenizer` from a tokenizer.json file, a model directory holding one, or a Hub cache dir."""
    path = Path(path).expanduser()
    if path.is_file():
        return Tokenizer.from_file(str(path))
    directory = path if (path / "tokenizer.json").is_file() else files.model_dir(path)
    file = directory / "tokenizer.json"
    if not file.is_file():
        others = [name for name in files.TOKENIZER_FILES if (directory / name).is_file()]
        raise CheckpointNotFoundError(
            f"no tokenizer.json in {str(directory)!r} (tokenizer files found: {others}); jaxformer.hf.load_tokenizer "
            "reads the `tokenizers` format only. SentencePiece models (e.g. Marian's source.spm/target.spm) load with "
            "the sentencepiece library; or save a tokenizer.json with transformers' tokenizer.save_pretrained()."
        )
    return Tokenizer.from_file(str(file))
