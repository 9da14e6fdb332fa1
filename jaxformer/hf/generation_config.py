"""A HF checkpoint's generation_config.json as `SearchConfig` changes (transformers' generation defaults)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def checkpoint_search(directory: str | Path) -> dict[str, Any]:
    """The `SearchConfig` changes a HF checkpoint's generation_config.json asks for (transformers' names mapped):
    num_beams > 1 -> method="beam", beam_size; length_penalty and early_stopping under length_rule="transformers";
    no_repeat_ngram_size; min_length - 1 (the decoder start counts in it) or min_new_tokens; forced_eos_token_id."""
    file = Path(directory) / "generation_config.json"
    settings = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    out: dict[str, Any] = {"length_rule": "transformers"}
    if isinstance(settings.get("num_beams"), int) and settings["num_beams"] > 1:
        out.update(method="beam", beam_size=settings["num_beams"])
    if isinstance(settings.get("length_penalty"), (int, float)):
        out["length_penalty"] = settings["length_penalty"]
    if isinstance(settings.get("early_stopping"), (bool, str)):
        out["early_stopping"] = settings["early_stopping"]
    if isinstance(settings.get("no_repeat_ngram_size"), int):
        out["no_repeat_ngram_size"] = settings["no_repeat_ngram_size"]
    if isinstance(settings.get("min_length"), int):
        out["min_new_tokens"] = max(0, settings["min_length"] - 1)
    if isinstance(settings.get("min_new_tokens"), int):
        out["min_new_tokens"] = settings["min_new_tokens"]
    if isinstance(settings.get("forced_eos_token_id"), int):
        out["forced_eos_id"] = settings["forced_eos_token_id"]
    return out
