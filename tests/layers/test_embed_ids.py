"""Token ids outside [0, vocab_size): rejected eagerly, NaN rows (never a wrap to another token) under jit."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import models, presets
from jaxformer.layers.embed import Embed


def test_eager_lookup_rejects_ids_outside_the_table() -> None:
    embed = Embed(vocab_size=7, d_model=3)
    params = embed.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
    for bad in (7, -1):
        with pytest.raises(ValueError, match=f"contain {bad}, outside \\[0, 7\\)"):
            embed.apply(params, jnp.array([[0, bad]]))


def test_jitted_lookup_gives_nan_rows_for_bad_ids_and_exact_rows_otherwise() -> None:
    embed = Embed(vocab_size=7, d_model=3)
    params = embed.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
    table = np.asarray(nn.meta.unbox(params)["params"]["embedding"])
    rows = np.asarray(jax.jit(embed.apply)(params, jnp.array([[0, 6, 7, -1, -8, 3]])))
    np.testing.assert_array_equal(rows[0, [0, 1, 5]], table[[0, 6, 3]])
    assert np.isnan(rows[0, 2:5]).all()  # 7 (= V), -1 and -8: NaN, not row V-1 or a wrapped row


def test_a_bad_id_under_jit_makes_the_logits_non_finite() -> None:
    config = presets.get("tiny-gpt2")
    model = models.build(config)
    tokens = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    params = model.init(jax.random.PRNGKey(0), tokens)
    forward = jax.jit(model.apply)
    assert np.isfinite(np.asarray(forward(params, tokens))).all()
    for bad_id in (config.vocab_size, -1):
        logits = np.asarray(forward(params, tokens.at[0, 1].set(bad_id)))
        assert np.isnan(logits[0, 1:]).all()  # the bad position and every later one in its row
        np.testing.assert_array_equal(logits[1], np.asarray(forward(params, tokens))[1])  # other rows untouched
