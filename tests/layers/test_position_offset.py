"""BART/mBART learned positions with an offset: the table keeps `offset` leading rows; position p reads row p + offset.

Reference: transformers' BartLearnedPositionalEmbedding (an nn.Embedding of max_positions + 2 rows looked up at
position_ids + 2), written here as NumPy indexing of the same table.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.config import ConfigError, ModelConfig
from jaxformer.errors import InputError
from jaxformer.layers import LearnedPositions
from jaxformer.models.embeddings import InputEmbedding, token_embed


def test_offset_table_has_extra_rows_and_reads_p_plus_offset():
    max_len, d_model, offset = 7, 5, 2
    layer = LearnedPositions(max_len, d_model, init_stddev=1.0, offset=offset)
    positions = jnp.array([[0, 1, 2, 6], [3, 3, 5, 0]])
    variables = layer.init(jax.random.PRNGKey(0), positions)
    table = np.asarray(nn.meta.unbox(variables["params"])["embedding"])
    assert table.shape == (max_len + offset, d_model)
    out = np.asarray(layer.apply(variables, positions))
    np.testing.assert_array_equal(out, table[np.asarray(positions) + offset])
    # Without an offset the same table rows are read at p: the offset is what moves them.
    plain = LearnedPositions(max_len + offset, d_model).apply(variables, positions)
    np.testing.assert_array_equal(np.asarray(plain), table[np.asarray(positions)])


def test_offset_positions_stay_within_max_len():
    layer = LearnedPositions(4, 3, offset=2)
    variables = layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
    with pytest.raises(InputError, match="max_len"):
        layer.apply(variables, jnp.array([[4]]))  # row 6 exists, but position 4 is past max_len=4


def test_model_embedding_uses_the_config_offset():
    config = ModelConfig(family="encoder_decoder", vocab_size=11, d_model=6, num_heads=2, max_len=5, position_offset=2)
    embed = token_embed(config)
    module = InputEmbedding(config, embed)
    tokens = jnp.array([[1, 2, 3]])
    positions = jnp.array([[0, 1, 4]])
    variables = module.init(jax.random.PRNGKey(1), tokens, positions)
    params = nn.meta.unbox(variables["params"])
    rows = np.asarray(params["positions"]["embedding"])
    assert rows.shape == (7, 6)
    want = np.asarray(params["embed"]["embedding"])[np.asarray(tokens)] + rows[np.asarray(positions) + 2]
    np.testing.assert_allclose(np.asarray(module.apply(variables, tokens, positions)), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(position_offset=-1), "position_offset=-1 must be an integer >= 0"),
        (dict(position_offset=2, position="sinusoidal"), "needs position='learned'"),
        (dict(family="encoder_decoder", encoder_head="classification"), "set classifier_token_id"),
        (dict(family="encoder_decoder", encoder_head="mlm"), "encoder_only head"),
        (dict(classifier_token_id=500), r"classifier_token_id=500 must be a token id in \[0, vocab_size=256\)"),
    ],
)
def test_seq2seq_fields_are_validated(fields, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**fields)
