"""Prompt packing and bad decoding inputs: each raises ValueError with a message naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
from support.decoding_reference import model_and_params

from jaxformer import decoding


@pytest.fixture(scope="module")
def gpt2():
    return model_and_params("tiny-gpt2")


@pytest.fixture(scope="module")
def transformer():
    return model_and_params("tiny-transformer")


def test_pack_prompts_left_pads_and_counts_positions_from_zero():
    tokens, valid = decoding.pack_prompts([[5, 6, 7], [8]], pad_id=0)
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [0, 0, 8]])
    np.testing.assert_array_equal(valid, [[True, True, True], [False, False, True]])
    np.testing.assert_array_equal(decoding.positions_from_valid(valid), [[0, 1, 2], [0, 0, 0]])
    array_tokens, array_valid = decoding.pack_prompts(np.array([[5, 6, 7], [8, 9, 9]]), lengths=[3, 1])
    np.testing.assert_array_equal(array_tokens, tokens)
    np.testing.assert_array_equal(array_valid, valid)


def test_empty_prompt(gpt2):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        decoding.generate(*gpt2, [[5, 6], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompts is empty"):
        decoding.generate(*gpt2, [], max_new_tokens=2)


def test_prompt_plus_new_tokens_longer_than_max_len(gpt2):
    config, params = gpt2  # max_len = 64
    with pytest.raises(ValueError, match=r"prompt length 60 \+ max_new_tokens 5 = 65 exceeds .*max_len=64"):
        decoding.generate(config, params, [[3] * 60], max_new_tokens=5)


def test_target_longer_than_max_len(transformer):
    with pytest.raises(ValueError, match="max_new_tokens=65 exceeds the model's max_len=64"):
        decoding.translate(*transformer, np.array([[4, 5]]), bos_id=1, max_new_tokens=65)


def test_source_longer_than_max_len(transformer):
    with pytest.raises(ValueError, match="source length 65 exceeds"):
        decoding.translate(*transformer, np.ones((1, 65), np.int32), bos_id=1, max_new_tokens=3)


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5])
def test_top_p_outside_unit_interval(gpt2, top_p):
    with pytest.raises(ValueError, match=r"top_p=.* must be in \(0, 1\]"):
        decoding.generate(*gpt2, [[5]], max_new_tokens=2, method="sample", top_p=top_p)


def test_negative_top_k(gpt2):
    with pytest.raises(ValueError, match="top_k=-1 must be an integer >= 0"):
        decoding.generate(*gpt2, [[5]], max_new_tokens=2, method="sample", top_k=-1)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_for_sampling(gpt2, temperature):
    with pytest.raises(ValueError, match=r"temperature=.* must be > 0 for sampling"):
        decoding.generate(*gpt2, [[5]], max_new_tokens=2, method="sample", temperature=temperature)


def test_beam_size_below_one(gpt2, transformer):
    with pytest.raises(ValueError, match="beam_size=0 must be an integer >= 1"):
        decoding.beam_search(*gpt2, [[5]], max_new_tokens=2, beam_size=0)
    with pytest.raises(ValueError, match="beam_size=0 must be an integer >= 1"):
        decoding.translate(*transformer, np.array([[4]]), bos_id=1, max_new_tokens=2, method="beam", beam_size=0)


def test_other_bad_settings(gpt2, transformer):
    with pytest.raises(ValueError, match="max_new_tokens=0 must be a positive integer"):
        decoding.generate(*gpt2, [[5]], max_new_tokens=0)
    with pytest.raises(ValueError, match="method='topk' is not allowed"):
        decoding.generate(*gpt2, [[5]], max_new_tokens=2, method="topk")
    with pytest.raises(ValueError, match=r"token id 99 outside \[0, vocab_size=99\)"):
        decoding.generate(*gpt2, [[5, 99]], max_new_tokens=2)
    with pytest.raises(ValueError, match="eos_id=200 must be a token id"):
        decoding.generate(*gpt2, [[5]], max_new_tokens=2, eos_id=200)
    with pytest.raises(ValueError, match=r"alpha=-0\.5 must be >= 0"):
        decoding.beam_search(*gpt2, [[5]], max_new_tokens=2, alpha=-0.5)
    with pytest.raises(ValueError, match="needs a decoder_only model"):
        decoding.generate(*transformer, [[5]], max_new_tokens=2)
    with pytest.raises(ValueError, match="needs an encoder_decoder model"):
        decoding.translate(*gpt2, np.array([[5]]), bos_id=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="source row 1 has no valid token"):
        decoding.translate(*transformer, np.array([[4], [5]]), np.array([[True], [False]]), bos_id=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="bos_id is required"):
        decoding.beam_search(*transformer, np.array([[4]]), max_new_tokens=2)
