"""BART and mBART against `transformers` (PyTorch CPU): forward parity, heads, round trips, greedy and beam-4.

Tiny random models made by `transformers` itself (d_model 36, 3 heads, FFN 52, vocabulary 97, 2 encoder /
3 decoder layers, 40 positions; norms and final_logits_bias perturbed so a swapped tensor cannot pass),
imported, compared on right-padded batches in float32. Presets: parameter counts equal `transformers`
built on the meta device from the published config.json values.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxformer import decoding, hf, models, presets
from jaxformer.errors import CheckpointError
from jaxformer.hf import bart as hf_bart
from jaxformer.hf import convert
from jaxformer.hf.convert import nested, param_shapes
from jaxformer.models.encoder_decoder import shift_right

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(
    vocab_size=97,
    d_model=36,
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=3,
    decoder_attention_heads=3,
    encoder_ffn_dim=52,
    decoder_ffn_dim=52,
    max_position_embeddings=40,
    dropout=0.0,
    init_std=0.2,
)
PAD, BOS, EOS, START = 1, 0, 2, 2  # BART's ids: decoder start = eos
LANG = 95  # mBART: the target-language id starts the decoder
ATOL = 1e-5
STEPS = 12


def perturb(model, seed: int):
    """Norm weights/biases and final_logits_bias away from their 1/0 initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "norm" in name:
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=gen))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(0.0, 0.3, generator=gen)
    return model.eval()


def make_models() -> dict[str, object]:
    tf = transformers
    torch.manual_seed(0)
    out = {
        "bart": tf.BartForConditionalGeneration(tf.BartConfig(**SIZES)),
        "mbart": tf.MBartForConditionalGeneration(
            tf.MBartConfig(**SIZES, scale_embedding=True, decoder_start_token_id=LANG)
        ),
        "bart_cls": tf.BartForSequenceClassification(tf.BartConfig(**SIZES, num_labels=3)),
        "mbart_cls": tf.MBartForSequenceClassification(tf.MBartConfig(**SIZES, scale_embedding=True, num_labels=4)),
        "bart_base": tf.BartModel(tf.BartConfig(**SIZES)),
        "bart_untied": tf.BartForConditionalGeneration(tf.BartConfig(**SIZES, tie_word_embeddings=False)),
    }
    return {name: perturb(model, i) for i, (name, model) in enumerate(out.items())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (directory written by save_pretrained, the torch model)."""
    root = tmp_path_factory.mktemp("hf_bart")
    out = {}
    for name, model in make_models().items():
        model.save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


def padded(seed: int, lengths, length: int, start: int | None = None, end: int | None = None):
    """ids [B, T] of random tokens 3..96, right-padded with PAD; `start` first and `end` last when given."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 97, (len(lengths), length))
    valid = np.arange(length)[None, :] < np.array(lengths)[:, None]
    if start is not None:
        ids[:, 0] = start
    if end is not None:
        ids[np.arange(len(lengths)), np.array(lengths) - 1] = end
    return np.where(valid, ids, PAD), valid


def assert_close(ours, ref, valid=None, atol=ATOL) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref) if valid is None else np.abs(ours - ref)[valid]
    assert diff.max() < atol, f"max abs diff {diff.max():.3g} >= {atol} (reference scale {np.abs(ref).max():.3g})"
    assert np.abs(ref).max() > 1000 * atol  # not a comparison of near-zero numbers
    return float(diff.max())


def random_params(config, seed: int) -> dict:
    """Params of `config` drawn with NumPy (no XLA compile of the model's init)."""
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.2, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


def as_mask(valid: np.ndarray) -> torch.Tensor:
    return torch.tensor(valid.astype(np.int64))


# Forward parity ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bart", "mbart"])
def test_encoder_hidden_and_logits_match_transformers(tiny, name):
    directory, reference = tiny[name]
    model, params, config = hf.load(directory)
    assert config.position_offset == 2 and config.embedding_norm and config.final_logits_bias
    assert config.norm_position == ("pre" if name == "mbart" else "post")
    assert config.embed_scale == (name == "mbart") and config.tie_embeddings
    assert config.pad_token_id == PAD
    source, source_valid = padded(3, (9, 6, 2), 9, end=EOS)
    target, target_valid = padded(4, (8, 8, 3), 8, start=START)
    with torch.no_grad():
        out = reference(
            input_ids=torch.tensor(source),
            attention_mask=as_mask(source_valid),
            decoder_input_ids=torch.tensor(target),
            decoder_attention_mask=as_mask(target_valid),
        )
    args = (jnp.asarray(source), jnp.asarray(target))
    masks = dict(source_valid=jnp.asarray(source_valid), target_valid=jnp.asarray(target_valid))
    logits = jax.jit(model.apply)({"params": params}, *args, **masks)
    encoded = jax.jit(lambda p, s, v: model.apply({"params": p}, s, v, method="encode"))(
        params, args[0], masks["source_valid"]
    )
    assert_close(encoded, out.encoder_last_hidden_state.numpy(), source_valid)
    assert_close(logits, out.logits.numpy(), target_valid)


def test_bart_model_without_head_matches_transformers(tiny):
    directory, reference = tiny["bart_base"]
    model, params, config = hf.load(directory)
    assert not config.final_logits_bias and config.tie_embeddings
    source, source_valid = padded(5, (7, 4), 7, end=EOS)
    target, target_valid = padded(6, (5, 3), 5, start=START)
    with torch.no_grad():
        out = reference(
            input_ids=torch.tensor(source),
            attention_mask=as_mask(source_valid),
            decoder_input_ids=torch.tensor(target),
            decoder_attention_mask=as_mask(target_valid),
        )
    encode = jax.jit(lambda p, s, v: model.apply({"params": p}, s, v, method="encode"))
    decode = jax.jit(
        lambda p, t, e, v, tv: model.apply({"params": p}, t, e, v, target_valid=tv, method="decoder_hidden")
    )
    encoded = encode(params, jnp.asarray(source), jnp.asarray(source_valid))
    hidden = decode(params, jnp.asarray(target), encoded, jnp.asarray(source_valid), jnp.asarray(target_valid))
    assert_close(encoded, out.encoder_last_hidden_state.numpy(), source_valid)
    assert_close(hidden, out.last_hidden_state.numpy(), target_valid)


@pytest.mark.parametrize("name", ["bart_cls", "mbart_cls"])
def test_sequence_classification_matches_transformers(tiny, name):
    directory, reference = tiny[name]
    model, params, config = hf.load(directory)
    assert config.encoder_head == "classification" and config.classifier_token_id == EOS
    assert config.num_classes == reference.config.num_labels
    # One eos per row (transformers' rule), at the end of each row's real tokens; pads after it.
    source, source_valid = padded(7, (8, 5, 3, 6), 8, end=EOS)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(source), attention_mask=as_mask(source_valid)).logits.numpy()
    # transformers' decoder inputs: BART shifts right after its start id; mBART wraps the last real token.
    start = START if name == "bart_cls" else EOS
    target = shift_right(jnp.asarray(source), start)
    forward = jax.jit(model.apply)
    logits = forward({"params": params}, jnp.asarray(source), target, jnp.asarray(source_valid))
    assert logits.shape == (4, config.num_classes)
    assert_close(logits, expected, atol=ATOL)
    # The head reads the eos position: moving the eos changes the logits.
    moved = np.where(source == EOS, 50, source)
    moved[:, 1] = EOS
    other = forward(
        {"params": params}, jnp.asarray(moved), shift_right(jnp.asarray(moved), start), jnp.asarray(source_valid)
    )
    assert np.abs(np.asarray(other) - np.asarray(logits)).max() > 1e-3


def test_finetune_init_adds_a_classification_head_to_a_bart_lm(tiny, tmp_path):
    """BartForConditionalGeneration -> classifier: the body kept, the head new; it exports as
    BartForSequenceClassification and transformers gives jaxformer's logits."""
    directory, _ = tiny["bart"]
    _, loaded, _ = hf.load(directory)
    config, params = hf.finetune_init(directory, encoder_head="classification", num_classes=3, classifier_token_id=EOS)
    assert "lm_head" not in params and {"pooler", "classifier"} <= set(params)
    np.testing.assert_array_equal(params["embed"]["embedding"], loaded["embed"]["embedding"])
    out = hf.save(config, params, tmp_path / "cls")
    reference = transformers.BartForSequenceClassification.from_pretrained(out).eval()
    source, source_valid = padded(12, (6, 4), 6, end=EOS)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(source), attention_mask=as_mask(source_valid)).logits.numpy()
    model = models.build(config)
    target = shift_right(jnp.asarray(source), START)
    logits = jax.jit(model.apply)({"params": params}, jnp.asarray(source), target, jnp.asarray(source_valid))
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=ATOL)


# Round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bart", "mbart", "bart_cls", "mbart_cls", "bart_base"])
def test_save_then_from_pretrained_is_bit_exact(tiny, name, tmp_path):
    directory, reference = tiny[name]
    _, params, config = hf.load(directory)
    out = hf.save(config, params, tmp_path / "export")
    original, exported = load_file(directory / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(exported) == sorted(original)
    for key, tensor in original.items():
        np.testing.assert_array_equal(exported[key], tensor, err_msg=key)
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == reference.config.architectures or written["architectures"] == [
        type(reference).__name__
    ]
    again = type(reference).from_pretrained(out).eval()
    for key, tensor in reference.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], tensor, rtol=0, atol=0, msg=key)
    source, source_valid = padded(8, (6, 4), 6, end=EOS)
    with torch.no_grad():
        want = reference(input_ids=torch.tensor(source), attention_mask=as_mask(source_valid))
        got = again(input_ids=torch.tensor(source), attention_mask=as_mask(source_valid))
    key = "logits" if "logits" in want else "last_hidden_state"
    torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    assert convert.architecture_for(config).model_type == reference.config.model_type


def test_jaxformer_preset_exports_to_transformers_with_same_outputs(tmp_path):
    """tiny-mbart with random jaxformer params -> MBartForConditionalGeneration gives jaxformer's logits."""
    config = presets.get("tiny-mbart", dropout_rate=0.0)
    params = random_params(config, 3)
    out = hf.save(config, params, tmp_path / "tiny-mbart")
    reference = transformers.MBartForConditionalGeneration.from_pretrained(out).eval()
    source, source_valid = padded(9, (7, 5), 7, end=EOS)
    target, target_valid = padded(10, (6, 6), 6, start=LANG)
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(source), attention_mask=as_mask(source_valid), decoder_input_ids=torch.tensor(target)
        ).logits.numpy()
    model = models.build(config)
    logits = jax.jit(model.apply)(
        {"params": params}, jnp.asarray(source), jnp.asarray(target), jnp.asarray(source_valid)
    )
    assert_close(logits, expected, target_valid)


def test_untied_tables_are_refused_in_one_line(tiny):
    """transformers 5 with tie_word_embeddings=False unties shared, encoder and decoder tables (three)."""
    with pytest.raises(CheckpointError, match=r"should be a tied copy of 'shared\.weight'"):
        hf.load(tiny["bart_untied"][0])


def test_export_refuses_a_config_bart_cannot_represent(tmp_path):
    config = presets.get("tiny-bart", position_offset=0)
    params = random_params(config, 0)
    with pytest.raises(CheckpointError, match="position_offset=0"):
        hf.save(config, params, tmp_path / "bad")


# Generation ----------------------------------------------------------------------------------


def hf_generate(reference, source, source_valid, *, eos, beams, start, forced=None) -> np.ndarray:
    """`generate` with every rule stated (both sides use the same): no forced tokens, no n-gram blocking,
    beam score = sum of log-probs (length_penalty 0 = jaxformer alpha 0), early_stopping=False; the
    decoder-start column removed."""
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(source),
            attention_mask=as_mask(source_valid),
            do_sample=False,
            num_beams=beams,
            length_penalty=0.0 if beams > 1 else None,
            early_stopping=False if beams > 1 else None,
            max_new_tokens=STEPS,
            eos_token_id=eos,
            pad_token_id=PAD,
            decoder_start_token_id=start,
            forced_bos_token_id=forced,
            forced_eos_token_id=None,
            no_repeat_ngram_size=0,
            repetition_penalty=1.0,
            min_length=0,
            bad_words_ids=None,
        )
    return out[:, 1:].numpy()


def same_until_padding(ours: np.ndarray, expected: np.ndarray) -> None:
    """transformers stops when every row has ended; jaxformer returns all steps, padded after EOS."""
    np.testing.assert_array_equal(ours[:, : expected.shape[1]], expected)
    assert np.all(ours[:, expected.shape[1] :] == PAD)


@pytest.fixture(scope="module", params=["bart", "mbart"])
def generation_setup(request, tiny):
    """(reference, config, params, source, source_valid, decoder start, an eos id the model emits mid-row)."""
    directory, reference = tiny[request.param]
    _, params, config = hf.load(directory)
    start = hf.read_special_tokens(directory)["decoder_start_token_id"]
    assert start == (LANG if request.param == "mbart" else START)
    source, source_valid = padded(11, (9, 7, 4, 2), 9, end=EOS)
    free = decoding.translate(
        config, params, source, source_valid, bos_id=start, eos_id=None, pad_id=PAD, max_new_tokens=STEPS
    )
    assert len({tuple(row) for row in free}) >= 3  # source-dependent, not one repeated row
    eos = int(free[0, 4])
    return reference, config, params, source, source_valid, start, eos


@pytest.mark.parametrize("beams", [1, pytest.param(4, marks=pytest.mark.slow)])  # beam-4: a longer compile
def test_generation_matches_transformers_generate(generation_setup, beams):
    """Each of: no eos, an eos that ends rows early, and (mBART-50 style: decoder start = eos, the language
    forced as the first token) forced_bos_token_id."""
    reference, config, params, source, source_valid, start, eos = generation_setup
    for stop, first, forced in ((None, start, None), (eos, start, None), (eos, EOS, LANG)):
        expected = hf_generate(reference, source, source_valid, eos=stop, beams=beams, start=first, forced=forced)
        search = dict(method="greedy") if beams == 1 else dict(method="beam", beam_size=beams, alpha=0.0)
        ours = decoding.translate(
            config,
            params,
            source,
            source_valid,
            bos_id=first,
            eos_id=stop,
            pad_id=PAD,
            max_new_tokens=STEPS,
            forced_bos_id=forced,
            **search,
        )
        same_until_padding(ours, expected)
        if stop is not None and forced is None:
            assert any(stop in row for row in expected)  # the eos case really ends rows early
        if forced is not None:
            assert np.all(ours[:, 0] == forced)


# Presets -------------------------------------------------------------------------------------

# Published config.json values (the keys the architecture reads), from the Hub repos.
PUBLISHED: dict[str, tuple[str, dict]] = {
    "bart-base": (  # facebook/bart-base
        "bart",
        dict(
            vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
            scale_embedding=False, dropout=0.1, attention_dropout=0.1, pad_token_id=1,
        ),
    ),
    "bart-large": (  # facebook/bart-large
        "bart",
        dict(
            vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
            decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
            scale_embedding=False, dropout=0.1, attention_dropout=0.1, pad_token_id=1,
        ),
    ),
    "mbart-large-cc25": (  # facebook/mbart-large-cc25
        "mbart",
        dict(
            vocab_size=250027, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
            decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
            scale_embedding=True, dropout=0.1, attention_dropout=0.1, pad_token_id=1,
        ),
    ),
    "mbart-large-50": (  # facebook/mbart-large-50
        "mbart",
        dict(
            vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
            decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
            scale_embedding=True, dropout=0.1, attention_dropout=0.1, pad_token_id=1,
        ),
    ),
}  # fmt: skip


def meta_count(model_type: str, values: dict) -> int:
    """Parameters of *ForConditionalGeneration on the meta device, plus its final_logits_bias buffer
    (jaxformer holds that bias as a parameter). Tied tables count once."""
    tf = transformers
    config_cls, model_cls = {
        "bart": (tf.BartConfig, tf.BartForConditionalGeneration),
        "mbart": (tf.MBartConfig, tf.MBartForConditionalGeneration),
    }[model_type]
    with torch.device("meta"):
        model = model_cls(config_cls(**values))
    return sum(p.numel() for p in model.parameters()) + model.final_logits_bias.numel()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_count_equals_transformers_on_meta(name):
    model_type, values = PUBLISHED[name]
    preset = presets.get(name)
    assert models.param_count(preset) == meta_count(model_type, values)
    exported = {k: v for k, v in hf_bart.ARCHITECTURES[model_type].config_to_hf(preset).items() if k in values}
    assert meta_count(model_type, {**values, **exported}) == meta_count(model_type, values)
    bias = {"final_logits_bias": np.zeros((1, values["vocab_size"]), np.float32)}
    assert hf_bart.ARCHITECTURES[model_type].config_from_hf(values, bias) == preset


@pytest.mark.parametrize("name", ["tiny-bart", "tiny-mbart"])
def test_tiny_presets_are_the_tiny_transformers_models(tiny, name):
    directory, reference = tiny[name.removeprefix("tiny-")]
    _, _, config = hf.load(directory)
    fields = dict(dropout_rate=0.0, initializer_range=0.2)
    assert config == presets.get(name, **fields)
    assert models.param_count(config) == sum(p.numel() for p in reference.parameters()) + reference.config.vocab_size
