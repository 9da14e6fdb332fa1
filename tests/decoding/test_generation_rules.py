"""Token rules (`decoding.rules`): the no-repeat-n-gram mask against a NumPy reference of transformers'
rule, and `SearchConfig`'s checks of the new settings."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.config import SearchConfig
from jaxformer.decoding.rules import banned_ngram_tokens
from jaxformer.errors import ConfigError


def reference_banned(row: list[int], size: int, vocab: int) -> np.ndarray:
    """transformers' NoRepeatNGram rule in plain Python: n-grams of `row`, banned = continuations of its last n - 1."""
    banned = np.zeros(vocab, bool)
    if len(row) + 1 < size:
        return banned
    grams: dict[tuple[int, ...], set[int]] = {}
    for i in range(len(row) - size + 1):
        grams.setdefault(tuple(row[i : i + size - 1]), set()).add(row[i + size - 1])
    for token in grams.get(tuple(row[len(row) - size + 1 :]) if size > 1 else (), set()):
        banned[token] = True
    return banned


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_no_repeat_mask_equals_numpy_reference(size):
    rng = np.random.default_rng(size)
    vocab, length = 3, 14  # few tokens: repeats are frequent
    history = rng.integers(0, vocab, (6, length))
    history[0, :6] = [0, 1, 2, 0, 1, 2]  # a row whose last n-gram surely repeats
    hits = 0
    for count in range(length + 1):
        ours = np.asarray(banned_ngram_tokens(jnp.asarray(history), jnp.int32(count), size, vocab))
        for r in range(history.shape[0]):
            expected = reference_banned(history[r, :count].tolist(), size, vocab)
            np.testing.assert_array_equal(ours[r], expected, err_msg=f"row {r} count {count}")
            hits += int(expected.any())
    assert hits > 10  # the rule bans something in many cases


def test_search_config_checks_the_rules():
    config = SearchConfig(early_stopping=True, length_rule="transformers", length_penalty=2, no_repeat_ngram_size=3)
    assert config.early_stopping == "true" and config.length_penalty == 2.0
    assert SearchConfig(early_stopping="never").early_stopping == "never"
    for bad in (
        dict(early_stopping="sometimes"),
        dict(length_rule="hf"),
        dict(no_repeat_ngram_size=-1),
        dict(min_new_tokens=1.5),
        dict(forced_eos_id=-2),
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SearchConfig(**bad)
