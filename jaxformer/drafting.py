"""Speculative decoding for a run: the draft model given as a workdir, a HF checkpoint or preset + params.

    run = inference.load_run("/tmp/shakespeare")
    out = generate_speculative(run, ["ROMEO:"], "/tmp/shakespeare-draft", draft_tokens=4, max_new_tokens=64)
    out.texts, out.acceptance_rate                         # greedy: the same text as inference.generate
    generate_speculative(run, prompts, ("tiny-gpt2", draft_params))   # a preset name (or ModelConfig) + params

The search is `jaxformer.decoding.speculative` (greedy equal to plain greedy, sampling by the
rejection rule that keeps the target's distribution). A draft that is not decoder-only or whose
vocabulary differs from the target's is a one-line `InferenceError`. Kept beside `inference` (same
floor) so that module stays one job: loading a run and serving it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxformer import hf, presets
from jaxformer.config import GENERATE_NEW_TOKENS, ConfigError, ModelConfig, SearchConfig
from jaxformer.decoding.speculative import MAX_DRAFT_TOKENS, check_draft, speculative_generate
from jaxformer.errors import InputError
from jaxformer.inference import (
    InferenceError,
    InputTooLongError,
    Run,
    WrongFamilyError,
    load_run,
    prompt_ids,
)


@dataclasses.dataclass(frozen=True)
class SpeculativeTexts:
    """The new text of each prompt, and how the draft did: accepted / proposed draft tokens, rounds."""

    texts: list[str]
    accepted: int
    proposed: int
    rounds: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def load_draft(draft: Any) -> tuple[ModelConfig, Any]:
    """(config, params) of a draft model given as a `Run`, a (ModelConfig or preset name, params) pair, or a
    path: a training workdir (it has checkpoints/) or a Hugging Face model directory / Hub repo id (its
    weights only: the text goes through the target's tokenizer)."""
    if isinstance(draft, Run):
        return draft.config, draft.params
    if isinstance(draft, tuple) and len(draft) == 2:
        config, params = draft
        return (presets.get(config) if isinstance(config, str) else config), params
    if isinstance(draft, (str, Path)):
        path = Path(draft).expanduser()
        if (path / "checkpoints").is_dir():
            run = load_run(path)
            return run.config, run.params
        _, params, config = hf.load(draft)  # the target's tokenizer serves both: no tokenizer.json needed
        return config, params
    raise InferenceError(
        f"draft={type(draft).__name__} is not a draft model; pass a Run, (config or preset name, params), "
        "a training workdir or a Hugging Face checkpoint."
    )


def generate_speculative(
    run: Run,
    prompts: Sequence[str],
    draft: Any,
    search: SearchConfig | None = None,
    *,
    draft_tokens: int = 4,
    chat: bool = False,
    **settings: Any,
) -> SpeculativeTexts:
    """`inference.generate` sped up by a draft model (any form `load_draft` takes) proposing `draft_tokens`
    tokens per round: the same text when greedy, the same distribution when sampling (stops at EOS).
    search / settings / chat as in `inference.generate`; prompt + max_new_tokens + draft_tokens - 1 must
    fit in both models' max_len."""
    if run.family != "decoder_only":
        raise WrongFamilyError(f"generate_speculative() needs a decoder-only model; {run.workdir} holds {run.family}.")
    draft_config, draft_params = load_draft(draft)
    try:
        check_draft(run.config, draft_config)
        search = SearchConfig.of(search, **settings)
        search = dataclasses.replace(search, max_new_tokens=search.new_tokens(GENERATE_NEW_TOKENS))
        search.check_model(run.config)
    except (ConfigError, InputError) as err:
        raise InferenceError(str(err)) from None
    if isinstance(draft_tokens, bool) or not isinstance(draft_tokens, int) or not 1 <= draft_tokens <= MAX_DRAFT_TOKENS:
        raise InferenceError(f"draft_tokens={draft_tokens!r} must be an integer in [1, {MAX_DRAFT_TOKENS}].")
    rows = prompt_ids(run, prompts, chat)
    longest, limit = max(len(r) for r in rows), min(run.config.max_len, draft_config.max_len)
    room = limit - longest - (draft_tokens - 1)  # the last round looks k - 1 tokens past the end
    new_tokens = search.max_new_tokens or 0
    if not 1 <= new_tokens <= room:
        raise InputTooLongError(
            f"max_new_tokens={new_tokens} must be in [1, {room}] (max_len {limit} - prompt length {longest} - "
            f"(draft_tokens {draft_tokens} - 1)); ask for fewer tokens, shorten the prompt or lower draft_tokens."
        )
    tokenizer = run.tokenizer
    result = speculative_generate(
        run.config,
        run.params,
        draft_config,
        draft_params,
        rows,
        search=search,
        draft_tokens=draft_tokens,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
    )
    texts = [tokenizer.decode([int(t) for t in row]) for row in result.tokens]
    return SpeculativeTexts(texts, result.accepted, result.proposed, result.rounds)


__all__ = ["SpeculativeTexts", "generate_speculative", "load_draft"]
