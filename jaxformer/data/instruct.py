"""Instruction-tuning data: JSONL records -> token pieces whose loss covers the completion only.

A record (one JSON object per line) is either
    {"prompt": "...", "completion": "..."}                       -> segments (prompt, 0), (completion, 1)
    {"messages": [{"role": "user", "content": "..."}, ...]}      -> the conversation rendered with the
        chat template; the text of each assistant turn (what the template adds after the generation
        prompt, end-of-turn marker included) has weight 1, everything else weight 0.
Key names come from `data.prompt_field` / `completion_field` / `messages_field`.

Encoding: each segment is tokenized on its own and the ids are concatenated, so every token belongs
to exactly one segment: piece = [bos] + ids + [eos], eos belonging to the last segment (a completion
is trained to stop). The model reads piece[:-1] and predicts piece[1:]; weight[t] = 1 exactly when
piece[t + 1] is a completion / assistant token (prompt tokens and padding get 0).

Length rule: a record is one piece of at most `max_length + 1` tokens (one row; never split across
rows). An over-long record loses tokens from its start after bos -- the prompt side, i.e. the
oldest turns first -- so the completion and its eos stay whole unless the completion alone is longer
than `max_length`; such records are counted in a warning (`data.truncate=True`) or raise
`SequenceTooLongError` naming the record (`data.truncate=False`).

Conversations are cut into segments by rendering prefixes: for assistant turn i the prompt is
render(messages[:i], add_generation_prompt=True) and the turn ends at render(messages[:i + 1]); the
template must render each prefix as the start of the longer conversation (all common templates do),
otherwise the record is refused with a one-line error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxformer.data import chat_template, files
from jaxformer.data.config import DataConfig
from jaxformer.data.encode import Examples, Ragged
from jaxformer.data.errors import DataError, DataFileNotFoundError, SequenceTooLongError
from jaxformer.data.records import RawSplit
from jaxformer.data.tokenizers import BOS_ID, EOS_ID, Tokenizer

log = logging.getLogger("jaxformer.data")

Segments = tuple[tuple[str, bool], ...]  # (text, trained) pieces of one record, in order
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


# Chat templates --------------------------------------------------------------------------------


class ChatTemplate:
    """A chat template's source and the special-token strings it sees (`bos_token`, `eos_token`, ...)."""

    def __init__(self, source: str, special_tokens: Mapping[str, str], origin: str) -> None:
        self.source, self.special_tokens, self.origin = source, dict(special_tokens), origin

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
        return chat_template.render(
            self.source, messages, add_generation_prompt=add_generation_prompt, special_tokens=self.special_tokens
        )


def load_chat_template(config: DataConfig) -> ChatTemplate:
    """The template of `data.chat_template_path` (a .jinja file, or a directory with chat_template.jinja
    or tokenizer_config.json's "chat_template"); default: the directory of `data.tokenizer_path`."""
    location = config.chat_template_path
    if location is None and config.tokenizer == "hf" and config.tokenizer_path:
        tokenizer = Path(config.tokenizer_path).expanduser()
        location = str(tokenizer if tokenizer.is_dir() else tokenizer.parent)
    if location is None:
        raise DataError(
            "messages records need a chat template; set data.chat_template_path to a .jinja file or a checkpoint "
            "directory (or use prompt/completion records)."
        )
    path = Path(location).expanduser()
    if not path.exists():
        raise DataFileNotFoundError(f"data.chat_template_path {str(path)!r} does not exist.")
    directory = path if path.is_dir() else path.parent
    config_file = directory / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    special = {name: text for name in SPECIAL_TOKEN_NAMES if (text := _token_text(tokenizer_config.get(name)))}
    if path.is_file():
        return ChatTemplate(files.read_text(path, "chat template"), special, str(path))
    if (directory / "chat_template.jinja").is_file():  # wins over tokenizer_config.json, as in transformers
        return ChatTemplate(files.read_text(directory / "chat_template.jinja", "chat template"), special, str(path))
    source = tokenizer_config.get("chat_template")
    if isinstance(source, list):  # the older list of named templates
        source = {t.get("name"): t.get("template") for t in source if isinstance(t, Mapping)}.get("default")
    if not isinstance(source, str):
        raise DataError(
            f"{str(path)!r} holds no chat template (no chat_template.jinja, no chat_template in "
            "tokenizer_config.json); set data.chat_template_path to a .jinja file."
        )
    return ChatTemplate(source, special, str(path))


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def conversation_segments(template: ChatTemplate, messages: Any, where: str) -> Segments:
    """The rendered conversation cut into (text, trained) segments: assistant turns trained."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list of {{'role': ..., 'content': ...}} objects.")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise DataError(f"{where}: message {index} must be an object with a string 'role', got {message!r}.")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise DataError(f"{where}: the conversation has no assistant message, so nothing would be trained.")
    segments: list[tuple[str, bool]] = []
    done = ""  # the rendered text covered by `segments`
    try:
        for i in turns:
            prompt = template.render(messages[:i], add_generation_prompt=True) if i else ""
            full = template.render(messages[: i + 1], add_generation_prompt=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise DataError(
                    f"{where}: the chat template ({template.origin}) does not render assistant turn {i} as a "
                    "continuation of the earlier turns, so its tokens cannot be located; use prompt/completion records."
                )
            segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
            done = full
        whole = template.render(messages, add_generation_prompt=False)
    except chat_template.ChatTemplateError as err:
        raise DataError(f"{where}: {err}") from None
    if not whole.startswith(done):
        raise DataError(f"{where}: the chat template renders the whole conversation differently from its turns.")
    segments.append((whole[len(done) :], False))
    return tuple((text, trained) for text, trained in segments if text)


# Reading ----------------------------------------------------------------------------------------


def read_instruct_jsonl(path: str | Path, config: DataConfig) -> list[Segments]:
    """The records of an instruction JSONL file as segments (see the module docstring)."""
    template: ChatTemplate | None = None
    records: list[Segments] = []
    for where, obj in files.json_objects(path, "instruct"):
        if config.messages_field in obj:
            template = template or load_chat_template(config)
            records.append(conversation_segments(template, obj[config.messages_field], where))
        elif config.prompt_field in obj and config.completion_field in obj:
            prompt = files.as_text(obj[config.prompt_field], where)
            completion = files.as_text(obj[config.completion_field], where)
            if not completion:
                raise DataError(f"{where}: the completion is empty, so nothing would be trained.")
            records.append(((prompt, False), (completion, True)))
        else:
            raise DataError(
                f"{where} has keys {sorted(obj)}; an instruct record needs {config.messages_field!r} or both "
                f"{config.prompt_field!r} and {config.completion_field!r} (data.*_field name them)."
            )
    if not records:
        raise DataError(f"instruct file {str(path)!r} has no records.")
    return records


def segment_texts(record: Segments) -> list[str]:
    return [text for text, _ in record]


# Encoding ---------------------------------------------------------------------------------------


def encode_record(record: Segments, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """[bos] + segment ids + [eos] and, per token, 1 if it is trained (bos 0; eos as the last segment)."""
    ids, trained = [BOS_ID], [0]
    for (_, is_trained), segment_ids in zip(record, tokenizer.encode_batch(segment_texts(record)), strict=True):
        ids += segment_ids
        trained += [int(is_trained)] * len(segment_ids)
    ids.append(EOS_ID)
    trained.append(int(record[-1][1]))
    return ids, trained


def encode_instruct(raw: RawSplit, tokenizer: Tokenizer, max_length: int, truncate: bool) -> Examples:
    """One lm piece per record with its per-target weights; the length rule of the module docstring."""
    pieces: list[list[int]] = []
    weights: list[list[int]] = []
    truncated = 0
    for start, records in raw.chunks():
        for offset, record in enumerate(records):
            ids, trained = encode_record(record, tokenizer)
            excess = len(ids) - (max_length + 1)
            if excess > 0:
                if not truncate:
                    raise SequenceTooLongError(
                        f"{raw.where(start + offset)}: the record has {len(ids) - 1} tokens (with eos), more than "
                        f"data.max_length={max_length}; raise data.max_length or set data.truncate=True to cut the "
                        "prompt side of such records (they are counted)."
                    )
                ids, trained = ids[:1] + ids[1 + excess :], trained[:1] + trained[1 + excess :]
                truncated += 1
            pieces.append(ids)
            weights.append(trained[1:])
    if truncated:
        log.warning(
            "truncated %d of %d %s instruct records to max_length=%d from the prompt side (data.truncate=True)",
            truncated,
            len(pieces),
            raw.name,
            max_length,
        )
    return Examples(
        "lm",
        Ragged.from_lists(pieces),
        None,
        None,
        np.arange(len(pieces), dtype=np.int64),
        truncated,
        Ragged.from_lists(weights),
    )
