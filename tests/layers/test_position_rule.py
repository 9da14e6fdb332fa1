"""position_rule="padding_offset" (RoBERTa): positions against a NumPy loop and transformers' own function."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.config import ConfigError, ModelConfig
from jaxformer.errors import InputError
from jaxformer.models.embeddings import check_length, encoder_positions, max_tokens, padding_offset_positions


def loop_reference(ids: np.ndarray, pad: int) -> np.ndarray:
    """fairseq's make_positions, one token at a time: the n-th non-pad token of a row sits at pad + n."""
    out = np.full(ids.shape, pad, np.int64)
    for row in range(ids.shape[0]):
        seen = 0
        for col in range(ids.shape[1]):
            if ids[row, col] != pad:
                seen += 1
                out[row, col] = pad + seen
    return out


def random_ids(seed: int, pad: int) -> np.ndarray:
    """[5, 11] ids with right, left and inner padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 9, (5, 11))
    ids[0, 7:] = pad  # right padding
    ids[1, :4] = pad  # left padding
    ids[2, :] = pad  # all padding
    ids[3] = np.where(ids[3] == pad, pad + 1, ids[3])  # no padding
    return ids


@pytest.mark.parametrize("pad", [0, 1, 5])
def test_padding_offset_positions_equal_the_loop(pad):
    ids = random_ids(pad, pad)
    got = np.asarray(padding_offset_positions(jnp.asarray(ids), pad))
    np.testing.assert_array_equal(got, loop_reference(ids, pad))
    assert got[3].tolist() == list(range(pad + 1, pad + 12)) and (got[2] == pad).all()


def test_padding_offset_positions_equal_transformers():
    torch = pytest.importorskip("torch")
    roberta = pytest.importorskip("transformers.models.roberta.modeling_roberta")
    ids = random_ids(7, 1)
    expected = roberta.RobertaEmbeddings.create_position_ids_from_input_ids(torch.tensor(ids), 1).numpy()
    np.testing.assert_array_equal(np.asarray(padding_offset_positions(jnp.asarray(ids), 1)), expected)


def test_encoder_positions_follow_the_config():
    ids = jnp.asarray(random_ids(3, 1))
    rule = ModelConfig(family="encoder_only", position_rule="padding_offset", pad_token_id=1, max_len=20)
    np.testing.assert_array_equal(np.asarray(encoder_positions(rule, ids)), loop_reference(np.asarray(ids), 1))
    plain = np.asarray(encoder_positions(ModelConfig(family="encoder_only"), ids))
    np.testing.assert_array_equal(plain, np.broadcast_to(np.arange(11), (5, 11)))


def test_the_offset_shortens_the_longest_input():
    config = ModelConfig(family="encoder_only", position_rule="padding_offset", pad_token_id=1, max_len=20)
    assert max_tokens(config) == 18  # positions 2..19 of a 20-row table
    check_length(config, 18)
    with pytest.raises(
        InputError, match="length 19 exceeds the model's maximum positions max_len=20 less the padding offset: 18"
    ):
        check_length(config, 19)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(family="decoder_only", position_rule="padding_offset"), "needs family='encoder_only'"),
        (dict(family="encoder_only", position="sinusoidal", position_rule="padding_offset"), "position='learned'"),
        (dict(family="encoder_only", position_rule="padding_offset", pad_token_id=9, max_len=10), "outside max_len=10"),
        (dict(position_rule="offset"), "position_rule"),
        (dict(pooler_activation="gelu"), "pooler_activation"),
    ],
)
def test_bad_fields_are_one_clear_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)
