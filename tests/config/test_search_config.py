"""SearchConfig: one frozen set of decoding settings, checked once, its defaults the CLI's defaults."""

from __future__ import annotations

import dataclasses

import pytest

from jaxformer import cli, presets
from jaxformer.config import MAX_BEAM_SIZE, ConfigError, SearchConfig


def test_defaults_are_greedy_and_frozen() -> None:
    search = SearchConfig()
    assert (search.method, search.max_new_tokens, search.top_k, search.top_p) == ("greedy", None, 0, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        search.beam_size = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(method="topk"), "method='topk' is not allowed"),
        (dict(beam_size=0), "beam_size=0 must be an integer >= 1"),
        (dict(beam_size=MAX_BEAM_SIZE + 1), f"at most {MAX_BEAM_SIZE}"),
        (dict(beam_size=2.0), "beam_size=2.0 must be an integer"),
        (dict(top_k=-1), "top_k=-1 must be an integer >= 0"),
        (dict(top_p=0.0), "top_p=0.0 must be a number in (0.0, 1.0]"),
        (dict(top_p=1.5), "top_p=1.5 must be a number in (0.0, 1.0]"),
        (dict(method="sample", temperature=0.0), "temperature=0.0 must be > 0 for sampling"),
        (dict(temperature=float("nan")), "temperature=nan must be a finite number"),
        (dict(alpha=-0.5), "alpha=-0.5 must be >= 0"),
        (dict(max_new_tokens=0), "max_new_tokens=0 must be a positive integer"),
        (dict(seed=-1), "seed=-1 must be an integer in [0, 2147483647]"),
        (dict(beam=3), "'beam' is not a search setting"),
    ],
)
def test_bad_settings_are_one_config_error(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SearchConfig.of(None, **changes)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_greedy_accepts_a_zero_temperature_and_of_keeps_the_base() -> None:
    base = SearchConfig(method="beam", beam_size=3)
    changed = SearchConfig.of(base, alpha=1.0)
    assert (changed.method, changed.beam_size, changed.alpha) == ("beam", 3, 1.0)
    assert SearchConfig(temperature=0.0).temperature == 0.0


def test_model_limits_checked_against_the_vocabulary() -> None:
    config = presets.get("tiny-gpt2")
    limit = config.vocab_size // 2
    SearchConfig(method="beam", beam_size=min(limit, MAX_BEAM_SIZE)).check_model(config)
    small = config.replace(vocab_size=9)
    with pytest.raises(ConfigError, match=r"beam_size=5 needs 2 \* beam_size <= vocab_size=9"):
        SearchConfig(method="beam", beam_size=5).check_model(small)
    SearchConfig(method="greedy", beam_size=5).check_model(small)  # beams unused: no limit
    with pytest.raises(ConfigError, match="top_k=10 must be at most vocab_size=9"):
        SearchConfig(method="sample", top_k=10).check_model(small)


def test_cli_search_defaults_come_from_search_config() -> None:
    parser = cli.build_parser()
    generate = parser.parse_args(["generate", "--workdir", "W", "--prompt", "x"])
    translate = parser.parse_args(["translate", "--workdir", "W", "--text", "x"])
    evaluate = parser.parse_args(["evaluate", "--workdir", "W"])
    defaults = SearchConfig()
    for field in dataclasses.fields(SearchConfig):
        assert getattr(generate, field.name) == getattr(defaults, field.name)
    for args in (translate, evaluate):
        assert cli._search_of(args) == defaults
    given = parser.parse_args(["generate", "--workdir", "W", "--prompt", "x", "--method", "sample", "--top_p", "0.5"])
    assert cli._search_of(given) == SearchConfig(method="sample", top_p=0.5)
