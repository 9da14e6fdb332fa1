"""jaxformer.hf against `transformers` (PyTorch CPU): forward parity, round trips, greedy and beam decoding.

Tiny random HF models with odd sizes (vocab 99, width 36, heads 4, FFN 37,
T5 head size 10, 2 encoder / 3 decoder layers) are saved with save_pretrained,
imported, and compared on padded batches in float32.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxformer import decoding, hf, models, presets
from jaxformer.hf.convert import nested, param_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, WIDTH, HEADS, FFN, MAX_LEN = 99, 36, 4, 37, 40
MARIAN_PAD, MARIAN_EOS = 98, 0  # like opus-mt: pad is the last id and starts the decoder
ATOL = 1e-4


def make_hf_models() -> dict[str, object]:
    """name -> untrained transformers model (seeded)."""
    tf = transformers
    torch.manual_seed(0)
    gpt2 = dict(vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=WIDTH, n_layer=2, n_head=HEADS, n_inner=FFN)
    gpt2.update(initializer_range=0.3, bos_token_id=None, eos_token_id=None)
    bert = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS)
    bert.update(intermediate_size=FFN, max_position_embeddings=MAX_LEN, type_vocab_size=3, initializer_range=0.2)
    t5 = dict(vocab_size=VOCAB, d_model=WIDTH, d_kv=10, d_ff=FFN, num_layers=2, num_decoder_layers=3, num_heads=HEADS)
    t5.update(relative_attention_num_buckets=8, relative_attention_max_distance=20)
    marian = dict(vocab_size=VOCAB, decoder_vocab_size=VOCAB, d_model=WIDTH, encoder_layers=2, decoder_layers=3)
    marian.update(
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN
    )
    marian.update(max_position_embeddings=MAX_LEN, pad_token_id=MARIAN_PAD, eos_token_id=MARIAN_EOS)
    marian.update(decoder_start_token_id=MARIAN_PAD, scale_embedding=True, activation_function="swish")
    out = {
        "gpt2": tf.GPT2LMHeadModel(tf.GPT2Config(**gpt2)),
        "gpt2_untied": tf.GPT2LMHeadModel(tf.GPT2Config(**gpt2, tie_word_embeddings=False)),
        "bert_mlm": tf.BertForMaskedLM(tf.BertConfig(**bert)),
        "bert_cls": tf.BertForSequenceClassification(tf.BertConfig(**bert, num_labels=3)),
        "t5": tf.T5ForConditionalGeneration(tf.T5Config(**t5)),  # v1.0: relu, tied, scaled logits
        "t5v11": tf.T5ForConditionalGeneration(
            tf.T5Config(**t5, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
        ),
        "marian": tf.MarianMTModel(tf.MarianConfig(**marian, init_std=0.2)),
    }
    torch.manual_seed(1)  # separate tables, untied head: a random model whose greedy output is not one repeated token
    out["marian_untied"] = tf.MarianMTModel(
        tf.MarianConfig(**marian, init_std=0.1, share_encoder_decoder_embeddings=False, tie_word_embeddings=False)
    )
    with torch.no_grad():
        out["t5v11"].lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, WIDTH))  # v1.1 has its own head
        for name in ("marian", "marian_untied"):
            out[name].final_logits_bias.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(2))
    return {name: model.eval() for name, model in out.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (directory written by save_pretrained, the torch model)."""
    root = tmp_path_factory.mktemp("hf_tiny")
    out = {}
    for name, model in make_hf_models().items():
        model.save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


def padded_batch(seed: int, batch: int = 3, length: int = 7, lengths=(7, 5, 3), low: int = 1, high: int = 97):
    """ids [B, T] with right padding (pad id 0 written, masked anyway) and valid [B, T]."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(low, high, (batch, length))
    valid = np.arange(length)[None, :] < np.array(lengths)[:, None]
    return np.where(valid, ids, 0), valid


def assert_close(ours, ref, valid=None, atol=ATOL) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref) if valid is None else np.abs(ours - ref)[valid]
    assert diff.max() < atol, f"max abs diff {diff.max():.3g} >= {atol} (reference scale {np.abs(ref).max():.3g})"
    assert np.abs(ref).max() > 100 * atol  # the comparison is not between near-zero numbers
    return float(diff.max())


# Forward parity ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "gpt2_untied"])
def test_gpt2_logits_match_transformers(tiny, name):
    directory, reference = tiny[name]
    model, params, config = hf.load(directory)
    assert config.tie_embeddings == (name == "gpt2") and config.activation == "gelu_tanh"
    ids, valid = padded_batch(0)
    with torch.no_grad():
        expected = reference(torch.tensor(ids), attention_mask=torch.tensor(valid.astype(np.int64))).logits.numpy()
    logits = jax.jit(model.apply)({"params": params}, jnp.asarray(ids), valid=jnp.asarray(valid))
    assert_close(logits, expected, valid)


@pytest.mark.parametrize("name", ["bert_mlm", "bert_cls"])
def test_bert_hidden_states_and_heads_match_transformers(tiny, name):
    directory, reference = tiny[name]
    model, params, config = hf.load(directory)
    assert config.encoder_head == {"bert_mlm": "mlm", "bert_cls": "classification"}[name]
    assert config.norm_eps == 1e-12 and config.num_token_types == 3
    ids, valid = padded_batch(1)
    types = np.random.default_rng(2).integers(0, 3, ids.shape)
    with torch.no_grad():
        out = reference(
            torch.tensor(ids),
            attention_mask=torch.tensor(valid.astype(np.int64)),
            token_type_ids=torch.tensor(types),
            output_hidden_states=True,
        )
    ours = jax.jit(model.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(types), valid=jnp.asarray(valid))
    assert_close(ours["hidden"], out.hidden_states[-1].numpy(), valid)
    if name == "bert_mlm":
        assert_close(ours["logits"], out.logits.numpy(), valid)
    else:
        assert config.num_classes == 3
        assert_close(ours["logits"], out.logits.numpy())


@pytest.mark.parametrize("name", ["t5", "t5v11", "marian", "marian_untied"])
def test_encoder_decoder_logits_match_transformers(tiny, name):
    directory, reference = tiny[name]
    model, params, config = hf.load(directory)
    if name == "t5":
        assert config.tie_embeddings and config.tied_logits_rescale and config.activation == "relu"
    if name == "t5v11":
        assert not config.tie_embeddings and not config.tied_logits_rescale and config.activation == "geglu_tanh"
    if name.startswith("marian"):
        assert config.embed_scale and config.sinusoidal_layout == "concat" and config.activation == "silu"
        assert config.share_embeddings == (name == "marian") and config.pad_token_id == MARIAN_PAD
    source, source_valid = padded_batch(3)
    target, target_valid = padded_batch(4, length=6, lengths=(6, 6, 2))
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            decoder_input_ids=torch.tensor(target),
            decoder_attention_mask=torch.tensor(target_valid.astype(np.int64)),
        ).logits.numpy()
    logits = jax.jit(model.apply)(
        {"params": params},
        jnp.asarray(source),
        jnp.asarray(target),
        source_valid=jnp.asarray(source_valid),
        target_valid=jnp.asarray(target_valid),
    )
    assert_close(logits, expected, target_valid)


# Round trips ---------------------------------------------------------------------------------


def test_hf_to_jaxformer_to_hf_is_bit_exact(tiny, tmp_path):
    for name, (directory, _) in tiny.items():
        _, params, config = hf.load(directory)
        out = hf.save(config, params, tmp_path / name)
        original, written = load_file(str(directory / "model.safetensors")), load_file(str(out / "model.safetensors"))
        assert sorted(written) == sorted(original), name
        for key, tensor in original.items():
            assert written[key].dtype == tensor.dtype and written[key].shape == tensor.shape, (name, key)
            assert written[key].tobytes() == tensor.tobytes(), (name, key)


def random_params(config, seed: int) -> dict:
    """Params of `config` drawn with NumPy (fast: no XLA compile of the model's init)."""
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.2, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


def jaxformer_outputs(config, params, ids, valid):
    model = models.build(config)
    if config.family == "encoder_decoder":
        return np.asarray(jax.jit(model.apply)({"params": params}, ids, ids[:, :5], source_valid=valid))
    out = jax.jit(model.apply)({"params": params}, ids, valid=valid)
    return np.asarray(out["logits"] if isinstance(out, dict) else out)


def transformers_outputs(directory, config, ids, valid):
    if config.family == "encoder_decoder":
        cls = transformers.T5ForConditionalGeneration if config.position == "relative" else transformers.MarianMTModel
    else:
        cls = transformers.GPT2LMHeadModel if config.family == "decoder_only" else transformers.BertForMaskedLM
    model = cls.from_pretrained(directory).eval()
    mask = torch.tensor(np.asarray(valid).astype(np.int64))
    tokens = torch.tensor(np.asarray(ids))
    with torch.no_grad():
        if config.family == "encoder_decoder":
            return model(input_ids=tokens, attention_mask=mask, decoder_input_ids=tokens[:, :5]).logits.numpy()
        return model(tokens, attention_mask=mask).logits.numpy()


def same_architecture(a, b) -> bool:
    """Equal configs, reading num_decoder_layers=None as num_layers."""
    return a.replace(num_decoder_layers=a.decoder_layers) == b.replace(num_decoder_layers=b.decoder_layers)


MARIAN_LIKE = dict(sinusoidal_layout="concat", norm_eps=1e-5, activation="silu", final_logits_bias=True, max_len=40)


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("tiny-gpt2", {}),
        ("tiny-bert", {"encoder_head": "mlm"}),
        ("tiny-t5", {"activation": "geglu_tanh"}),
        ("tiny-transformer", MARIAN_LIKE),
    ],
)
def test_jaxformer_to_transformers_gives_same_outputs(tmp_path, preset, overrides):
    config = presets.get(preset, **overrides)
    params = random_params(config, seed=3)
    out = hf.save(config, params, tmp_path / preset)
    ids, valid = padded_batch(5, low=3)
    ours = jaxformer_outputs(config, params, jnp.asarray(ids), jnp.asarray(valid))
    theirs = transformers_outputs(out, config, ids, valid)
    rows = valid if config.family != "encoder_decoder" else None
    assert_close(ours, theirs, rows)
    _, reloaded, reloaded_config = hf.load(out)
    assert same_architecture(reloaded_config, config)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reloaded), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# Decoding ------------------------------------------------------------------------------------


def left_pad(prompts, pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad, np.int64)
    valid = np.zeros(ids.shape, bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :], valid[row, width - len(prompt) :] = prompt, True
    return ids, valid


def greedy_by_full_forward(model, params, ids, valid, steps: int) -> np.ndarray:
    """Reference loop without a KV cache: one full forward per new token, argmax of the last real position."""
    batch, prompt_len = ids.shape
    tokens = np.concatenate([ids, np.zeros((batch, steps), np.int64)], axis=1)
    live = np.concatenate([valid, np.zeros((batch, steps), bool)], axis=1)
    forward = jax.jit(model.apply)
    for step in range(steps):
        positions = np.maximum(np.cumsum(live, axis=1) - 1, 0)
        logits = forward(
            {"params": params}, jnp.asarray(tokens), positions=jnp.asarray(positions), valid=jnp.asarray(live)
        )
        tokens[:, prompt_len + step] = np.asarray(logits[:, prompt_len + step - 1]).argmax(-1)
        live[:, prompt_len + step] = True
    return tokens[:, prompt_len:]


def test_gpt2_greedy_matches_transformers_generate(tiny):
    directory, reference = tiny["gpt2"]
    model, params, config = hf.load(directory)
    prompts = [[5, 17, 33, 2, 71], [8, 44, 9], [60, 61, 62, 63]]  # different lengths: left padding
    ids, valid = left_pad(prompts, pad=0)
    steps = 10
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor(ids),
            attention_mask=torch.tensor(valid.astype(np.int64)),
            do_sample=False,
            num_beams=1,
            max_new_tokens=steps,
            min_new_tokens=steps,
            pad_token_id=0,
            eos_token_id=None,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )[:, ids.shape[1] :].numpy()
    assert len({tuple(row) for row in expected}) == 3 and len(set(expected[0])) > 3  # not a degenerate repetition
    np.testing.assert_array_equal(greedy_by_full_forward(model, params, ids, valid, steps), expected)
    cached = decoding.generate(config, params, prompts, max_new_tokens=steps, method="greedy", pad_id=0)
    np.testing.assert_array_equal(cached, expected)


def decoder_greedy_by_full_forward(model, params, source, source_valid, start: int, steps: int) -> np.ndarray:
    """Reference loop without a KV cache for an encoder-decoder (no EOS)."""
    target = np.full((source.shape[0], steps + 1), start, np.int64)
    forward = jax.jit(model.apply)
    for step in range(steps):
        logits = forward(
            {"params": params}, jnp.asarray(source), jnp.asarray(target), source_valid=jnp.asarray(source_valid)
        )
        target[:, step + 1] = np.asarray(logits[:, step]).argmax(-1)
    return target[:, 1:]


def marian_generate(reference, source, source_valid, eos: int | None, beams: int, steps: int) -> np.ndarray:
    """MarianMTModel.generate with plain settings; the decoder start (= pad) column removed."""
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            do_sample=False,
            num_beams=beams,
            length_penalty=0.0 if beams > 1 else None,  # beam score = sum of log-probs (jaxformer alpha=0)
            early_stopping=False if beams > 1 else None,
            max_new_tokens=steps,
            eos_token_id=eos,
            pad_token_id=MARIAN_PAD,
            decoder_start_token_id=MARIAN_PAD,
            forced_eos_token_id=None,
            bad_words_ids=None,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_length=0,
        )
    return out[:, 1:].numpy()


def same_until_padding(ours: np.ndarray, expected: np.ndarray) -> None:
    """HF stops when every row has ended; jaxformer returns all steps, padded after EOS."""
    np.testing.assert_array_equal(ours[:, : expected.shape[1]], expected)
    assert np.all(ours[:, expected.shape[1] :] == MARIAN_PAD)


@pytest.fixture(scope="module")
def marian_setup(tiny):
    """(reference, params, config, source, source_valid, cache-free greedy output without EOS)."""
    directory, reference = tiny["marian_untied"]
    model, params, config = hf.load(directory)
    source, source_valid = padded_batch(6, batch=4, length=6, lengths=(6, 4, 2, 5))
    source = np.where(source_valid, source, MARIAN_PAD)
    free = decoder_greedy_by_full_forward(model, params, source, source_valid, MARIAN_PAD, STEPS)
    assert len({tuple(row) for row in free}) >= 3 and len(set(free[1])) > 2  # source-dependent, not degenerate
    return reference, params, config, source, source_valid, free


STEPS = 10


def test_marian_greedy_matches_transformers_generate(marian_setup):
    reference, params, config, source, source_valid, free = marian_setup
    eos = int(free[0, 3])  # an id the model emits mid-sequence, so rows end at different steps
    ends = [list(row).index(eos) if eos in row else STEPS for row in free]
    assert len(set(ends)) > 1
    expected = marian_generate(reference, source, source_valid, eos, beams=1, steps=STEPS)
    for row, end in enumerate(ends):  # HF greedy = the cache-free full-forward loop, up to EOS
        np.testing.assert_array_equal(expected[row, : end + 1], free[row, : end + 1])
    options = dict(bos_id=MARIAN_PAD, max_new_tokens=STEPS, eos_id=eos, pad_id=MARIAN_PAD)
    same_until_padding(decoding.translate(config, params, source, source_valid, method="greedy", **options), expected)


def test_marian_beam_search_matches_transformers_generate(marian_setup):
    reference, params, config, source, source_valid, _ = marian_setup
    expected = marian_generate(reference, source, source_valid, None, beams=3, steps=STEPS)
    options = dict(bos_id=MARIAN_PAD, max_new_tokens=STEPS, eos_id=None, pad_id=MARIAN_PAD)
    beam = decoding.translate(config, params, source, source_valid, method="beam", beam_size=3, alpha=0.0, **options)
    np.testing.assert_array_equal(beam, expected)


def test_marian_beam_search_with_eos_matches_transformers_generate(marian_setup):
    reference, params, config, source, source_valid, free = marian_setup
    eos = int(free[0, 3])
    expected = marian_generate(reference, source, source_valid, eos, beams=3, steps=STEPS)
    options = dict(bos_id=MARIAN_PAD, max_new_tokens=STEPS, eos_id=eos, pad_id=MARIAN_PAD)
    beam = decoding.translate(config, params, source, source_valid, method="beam", beam_size=3, alpha=0.0, **options)
    same_until_padding(beam, expected)
