"""Checkpoint generation rules against `transformers.generate`: beam-4 with length_penalty, early_stopping,
no_repeat_ngram_size, min_length and forced_eos_token_id, and greedy with the token rules, on tiny random
BART / mBART / T5 v1.1 models made by `transformers` (right-padded sources, float32)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from jaxformer import decoding, hf
from jaxformer.hf.generation_config import checkpoint_search

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BART_SIZES = dict(
    vocab_size=97, d_model=36, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
    decoder_attention_heads=3, encoder_ffn_dim=52, decoder_ffn_dim=52, max_position_embeddings=40,
    dropout=0.0, init_std=0.2,
)  # fmt: skip
T5_SIZES = dict(  # equal encoder and decoder depth: transformers 5.24's T5 cache fails generate otherwise

    vocab_size=97, d_model=36, d_kv=12, d_ff=52, num_layers=3, num_decoder_layers=3, num_heads=3,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, initializer_factor=4.0,
    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
)  # fmt: skip
STEPS = 14
RULES = dict(no_repeat_ngram_size=3, min_length=5)  # transformers' min_length counts the decoder start
BEAM_RULES = dict(num_beams=4, length_penalty=2.0, early_stopping=True, **RULES)


def make(name: str):
    tf = transformers
    torch.manual_seed(3)
    if name == "bart":
        return tf.BartForConditionalGeneration(tf.BartConfig(**BART_SIZES)).eval(), 1
    if name == "mbart":
        config = tf.MBartConfig(**BART_SIZES, scale_embedding=True, decoder_start_token_id=95)
        return tf.MBartForConditionalGeneration(config).eval(), 1
    return tf.T5ForConditionalGeneration(tf.T5Config(**T5_SIZES)).eval(), 0


@pytest.fixture(scope="module", params=["bart", "mbart", "t5"])
def setup(request, tmp_path_factory):
    """(reference, config, params, source, source_valid, decoder start, pad, an eos id the model emits early)."""
    reference, pad = make(request.param)
    directory = tmp_path_factory.mktemp(request.param)
    reference.generation_config.forced_eos_token_id = None  # BART's config sets it; each test states its own
    reference.save_pretrained(directory)
    _, params, config = hf.load(directory)
    start = hf.read_special_tokens(directory)["decoder_start_token_id"]
    rng = np.random.default_rng(5)
    lengths = np.array([9, 6, 3])
    source_valid = np.arange(9)[None, :] < lengths[:, None]
    source = np.where(source_valid, rng.integers(3, 97, (3, 9)), pad)
    free = decoding.translate(
        config, params, source, source_valid, bos_id=start, eos_id=None, pad_id=pad, max_new_tokens=STEPS
    )
    eos = int(np.bincount(free[:, 1:6].ravel()).argmax())  # a token the model likes early: min_length bites
    return reference, config, params, source, source_valid, start, pad, eos


def hf_generate(setup, **settings) -> np.ndarray:
    reference, _, _, source, source_valid, start, pad, eos = setup
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            do_sample=False,
            max_new_tokens=STEPS,
            eos_token_id=eos,
            pad_token_id=pad,
            decoder_start_token_id=start,
            forced_bos_token_id=None,
            repetition_penalty=1.0,
            **settings,
        )
    out = out[:, 1:].numpy()
    return np.pad(out, ((0, 0), (0, STEPS - out.shape[1])), constant_values=pad)


def ours(setup, **settings) -> np.ndarray:
    _, config, params, source, source_valid, start, pad, eos = setup
    return decoding.translate(
        config, params, source, source_valid, bos_id=start, eos_id=eos, pad_id=pad, max_new_tokens=STEPS, **settings
    )


OUR_RULES = dict(no_repeat_ngram_size=3, min_new_tokens=4)


def test_greedy_with_token_rules_matches_transformers(setup):
    expected = hf_generate(setup, num_beams=1, forced_eos_token_id=None, **RULES)
    got = ours(setup, method="greedy", **OUR_RULES)
    np.testing.assert_array_equal(got, expected)
    plain = ours(setup, method="greedy")
    assert not np.array_equal(plain, got)  # the rules change the output


@pytest.mark.slow  # beam-4 with the rules: a longer compile per model
def test_beam_with_checkpoint_rules_matches_transformers(setup):
    eos = setup[-1]
    rules = dict(
        method="beam", beam_size=4, length_rule="transformers", length_penalty=2.0, early_stopping="true", **OUR_RULES
    )
    for forced in (None, eos):
        expected = hf_generate(setup, forced_eos_token_id=forced, **BEAM_RULES)
        got = ours(setup, forced_eos_id=forced, **rules)
        np.testing.assert_array_equal(got, expected)
    plain = ours(setup, method="beam", beam_size=4, alpha=0.0)
    assert not np.array_equal(plain, got)  # the rules change the output


@pytest.mark.parametrize("beams", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_checkpoint_generation_config_gives_transformers_defaults(setup, beams, tmp_path):
    """A generation_config.json like the published ones: transformers' `generate()` with no settings and
    `translate(**checkpoint_search(dir))` produce the same tokens."""
    reference, _, _, source, source_valid, start, pad, eos = setup
    rules = dict(BEAM_RULES, num_beams=beams) if beams > 1 else dict(RULES)
    settings = dict(rules, forced_eos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    settings.update(decoder_start_token_id=start, max_new_tokens=STEPS, do_sample=False, forced_bos_token_id=None)
    generation = transformers.GenerationConfig(**settings)
    generation.save_pretrained(tmp_path)
    loaded = checkpoint_search(tmp_path)
    assert loaded["no_repeat_ngram_size"] == 3 and loaded["min_new_tokens"] == 4 and loaded["forced_eos_id"] == eos
    assert loaded.get("beam_size", 1) == beams and loaded.get("early_stopping", True) is True
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            generation_config=generation,
        )
    expected = np.pad(out[:, 1:].numpy(), ((0, 0), (0, STEPS + 1 - out.shape[1])), constant_values=pad)
    np.testing.assert_array_equal(ours(setup, **loaded), expected)
