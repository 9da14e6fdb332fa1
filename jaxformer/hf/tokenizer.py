"""The tokenizer of a Hugging Face model directory, through the `tokenizers` library (tokenizer.json).

Ids are the model's own (no shifting), so they feed an imported model directly.

    tokenizer = load_tokenizer("path/to/hf_model_dir")              # tokenizers.Tokenizer
    checkpoint = load_checkpoint_tokenizer("path/to/hf_model_dir")  # + special ids, decode to EOS, chat prompts
    checkpoint.chat_ids([{"role": "user", "content": "Hi"}])        # == transformers apply_chat_template ids
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from jaxformer.errors import CheckpointNotFoundError
from jaxformer.hf import chat_template, files, hub


def load_tokenizer(path: str | Path, revision: str | None = None) -> Tokenizer:
    """`tokenizers.Tokenizer` from a tokenizer.json file, a model directory holding one, a Hub cache dir or repo id."""
    if hub.is_repo_id(path):
        path = hub.resolve(str(path), revision)
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


# A checkpoint's tokenizer with its special tokens and chat template -----------------------------

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: "<s>" or {"content": "<s>", ...} (an AddedToken)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _ids(value: Any) -> tuple[int, ...]:
    """An id field of config.json / generation_config.json: an int, a list of ints, or absent."""
    if isinstance(value, bool):
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ()


def read_chat_template(directory: Path, tokenizer_config: Mapping[str, Any]) -> str | None:
    """chat_template.jinja (which wins, as in transformers) or tokenizer_config.json's "chat_template".

    A list of named templates (the older multi-template form) gives the one named "default".
    """
    file = directory / CHAT_TEMPLATE_FILE
    if file.is_file():
        return file.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None


@dataclasses.dataclass(frozen=True)
class CheckpointTokenizer:
    """The tokenizer of a HF checkpoint as inference uses it: ids, special ids, decoding, chat prompts.

    Special ids come from generation_config.json, then config.json, then tokenizer_config.json's
    token strings. `eos_ids` may hold several ids (e.g. Qwen's <|im_end|> and <|endoftext|>);
    `decode` stops at the first of any of them. `bos_id` is the first decoder input: the
    checkpoint's decoder_start_token_id for an encoder-decoder, else its bos_token_id.
    """

    tokenizer: Tokenizer
    directory: Path
    eos_ids: tuple[int, ...]
    bos_id: int
    pad_id: int
    special_tokens: dict[str, str]  # {"eos_token": "<|im_end|>", ...}: what a chat template sees
    chat_template: str | None
    kind = "huggingface"

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int | None:
        return self.eos_ids[0] if self.eos_ids else None

    def encode(self, text: str) -> list[int]:
        """Ids of `text` alone (no special tokens added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_input(self, text: str) -> list[int]:
        """Ids of `text` as the checkpoint's model takes it: tokenizer.json's post-processor adds BOS/EOS/CLS..."""
        return list(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` up to (not including) the first end-of-sequence id, special tokens skipped."""
        ids = [int(i) for i in ids]
        ends = [i for i, t in enumerate(ids) if t in self.eos_ids]
        return str(self.tokenizer.decode(ids[: ends[0]] if ends else ids, skip_special_tokens=True))

    def chat_ids(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Ids of `messages` rendered with the checkpoint's chat template (as transformers' apply_chat_template)."""
        if self.chat_template is None:
            raise chat_template.ChatTemplateError(
                f"the checkpoint {str(self.directory)!r} has no chat template (no chat_template in "
                f"tokenizer_config.json, no {CHAT_TEMPLATE_FILE}); pass the prompt as text with --prompt instead."
            )
        text = chat_template.render(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


def load_checkpoint_tokenizer(path: str | Path, revision: str | None = None) -> CheckpointTokenizer:
    """The tokenizer.json of a HF model directory (Hub cache dir, repo id) with its special ids and chat template."""
    directory = hub.locate(path, revision)
    tokenizer = load_tokenizer(directory)
    config = files.read_config(directory)
    generation = (
        files.read_json(directory / "generation_config.json")
        if (directory / "generation_config.json").is_file()
        else {}
    )
    tokenizer_config = (
        files.read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    )
    special = {name: text for name in SPECIAL_TOKEN_NAMES if (text := _token_text(tokenizer_config.get(name)))}

    def token_id(name: str) -> tuple[int, ...]:
        found = tokenizer.token_to_id(special[name]) if name in special else None
        return () if found is None else (int(found),)

    def first(key: str) -> tuple[int, ...]:
        for source in (generation, config):
            if ids := _ids(source.get(key)):
                return ids
        return token_id(key.removesuffix("_id"))

    eos = first("eos_token_id")
    bos = first("decoder_start_token_id") if config.get("is_encoder_decoder") else ()
    bos = bos or first("bos_token_id") or first("pad_token_id") or (0,)
    pad = first("pad_token_id") or eos or (0,)
    return CheckpointTokenizer(
        tokenizer, directory, eos, bos[0], pad[0], special, read_chat_template(directory, tokenizer_config)
    )
