"""T5 v1.1 / Flan-T5, mT5 and umT5 against `transformers` (PyTorch CPU), issue 22.

Tiny random models made by `transformers` itself (d_model 36, 3 heads of 10, d_ff 52, vocab 97,
2 encoder + 3 decoder layers, 8 relative buckets) are saved with save_pretrained and imported:
fp32 encoder hidden states and logits on padded batches, bit-exact export round trips that
`from_pretrained` reads back to the same outputs, and greedy / beam-4 decoding token for token
equal to `generate` with its settings stated (decoder start = pad, EOS, length_penalty, early_stopping).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from safetensors.numpy import load_file

from jaxformer import decoding, hf, models, presets
from jaxformer.cli import main as cli_main
from jaxformer.hf.convert import nested, param_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB, WIDTH, HEADS, HEAD_DIM, FFN = 97, 36, 3, 10, 52
PAD = 0  # T5's pad id, also the decoder start
ATOL = 1e-5
SIZES = dict(
    vocab_size=VOCAB,
    d_model=WIDTH,
    num_heads=HEADS,
    d_kv=HEAD_DIM,
    d_ff=FFN,
    num_layers=2,
    num_decoder_layers=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    dropout_rate=0.0,
    pad_token_id=PAD,
    eos_token_id=1,
    decoder_start_token_id=PAD,
)
# name -> (transformers class, config class, extra config, separate random lm_head)
FAMILY = {
    "flan_t5": ("T5ForConditionalGeneration", "T5Config", dict(feed_forward_proj="gated-gelu"), True),
    "mt5": ("MT5ForConditionalGeneration", "MT5Config", {}, True),
    "mt5_tied": ("MT5ForConditionalGeneration", "MT5Config", {}, False),  # lm_head = shared, never rescaled
    "umt5": ("UMT5ForConditionalGeneration", "UMT5Config", {}, True),
}
MODEL_TYPES = {"flan_t5": "t5", "mt5": "mt5", "mt5_tied": "mt5", "umt5": "umt5"}


def make_model(name: str, seed: int):
    cls, config_cls, extra, untied = FAMILY[name]
    torch.manual_seed(seed)
    tie = {"tie_word_embeddings": False} if untied else {}
    model = getattr(transformers, cls)(getattr(transformers, config_cls)(**SIZES, **extra, **tie))
    if untied:
        with torch.no_grad():  # published v1.1 / mT5 / umT5 checkpoints store their own lm_head
            model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, WIDTH) * 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (directory written by save_pretrained, the torch model)."""
    root = tmp_path_factory.mktemp("t5_family")
    out = {}
    for seed, name in enumerate(FAMILY):
        model = make_model(name, seed)
        model.save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


def padded_batch(seed: int, batch: int = 3, length: int = 7, lengths=(7, 5, 3), low: int = 2):
    """ids [B, T] right-padded with PAD, valid [B, T]."""
    rng = np.random.default_rng(seed)
    valid = np.arange(length)[None, :] < np.array(lengths)[:, None]
    return np.where(valid, rng.integers(low, VOCAB, (batch, length)), PAD), valid


def assert_close(ours, ref, valid=None, atol=ATOL) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref) if valid is None else np.abs(ours - ref)[valid]
    scale = float(np.abs(ref).max())
    # atol, or 1e-6 of the largest |entry| where the numbers are large (~14 fp32 ulps at 27): mT5's tied
    # logits reach ~27, and the ulp-level differences between CPUs' fp32 kernels there are ~1e-5.
    tolerance = max(atol, 1e-6 * scale)
    assert diff.max() < tolerance, f"max abs diff {diff.max():.3g} >= {tolerance:.3g} (reference scale {scale:.3g})"
    assert scale > 1e4 * atol  # not a comparison of near-zero numbers


def torch_forward(model, source, source_valid, target, target_valid):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            decoder_input_ids=torch.tensor(target),
            decoder_attention_mask=torch.tensor(target_valid.astype(np.int64)),
        )
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


# Import -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILY))
def test_config_reads_the_family(tiny, name):
    _, _, config = hf.load(tiny[name][0])
    untied = FAMILY[name][3]
    assert config.activation == "geglu_tanh" and config.tie_embeddings == (not untied)
    assert not config.tied_logits_rescale
    assert config.relative_bias_per_layer == (name == "umt5")
    assert config.hf_model_type == ("mt5" if name.startswith("mt5") else None)
    assert (config.num_layers, config.decoder_layers, config.dim_per_head) == (2, 3, HEAD_DIM)


@pytest.mark.parametrize("name", list(FAMILY))
def test_encoder_states_and_logits_match_transformers(tiny, name):
    directory, reference = tiny[name]
    model, params, _ = hf.load(directory)
    source, source_valid = padded_batch(3)
    target, target_valid = padded_batch(4, length=6, lengths=(6, 6, 2))
    encoded_ref, logits_ref = torch_forward(reference, source, source_valid, target, target_valid)
    variables = {"params": params}
    encoded = jax.jit(lambda v, s, m: model.apply(v, s, m, method="encode"))(
        variables, jnp.asarray(source), jnp.asarray(source_valid)
    )
    logits = jax.jit(model.apply)(
        variables,
        jnp.asarray(source),
        jnp.asarray(target),
        source_valid=jnp.asarray(source_valid),
        target_valid=jnp.asarray(target_valid),
    )
    assert_close(encoded, encoded_ref, source_valid)
    assert_close(logits, logits_ref, target_valid)


def test_umt5_holds_one_bias_table_per_self_attention_layer(tiny):
    _, params, config = hf.load(tiny["umt5"][0])
    reference = load_file(str(tiny["umt5"][0] / "model.safetensors"))
    for stack, layers in (("encoder", config.num_layers), ("decoder", config.decoder_layers)):
        assert "relative_position_bias" not in params[stack]
        tables = [
            np.asarray(params[stack][f"layers_{i}"]["relative_position_bias"]["embedding"]) for i in range(layers)
        ]
        for i, table in enumerate(tables):
            name = f"{stack}.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
            np.testing.assert_array_equal(table, reference[name])
        assert not np.array_equal(tables[0], tables[1])  # distinct tables, not one shared


# Export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILY))
def test_save_is_bit_exact_and_transformers_reads_it_back(tiny, tmp_path, name):
    directory, reference = tiny[name]
    _, params, config = hf.load(directory)
    out = hf.save(config, params, tmp_path / name)
    original, written = load_file(str(directory / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(written) == sorted(original)
    for key, tensor in original.items():
        assert written[key].dtype == tensor.dtype and written[key].tobytes() == tensor.tobytes(), key
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["model_type"] == MODEL_TYPES[name] and hf_config["architectures"] == [FAMILY[name][0]]
    assert hf_config["feed_forward_proj"] == "gated-gelu"
    assert hf_config["tie_word_embeddings"] == (not FAMILY[name][3])
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert type(reloaded).__name__ == FAMILY[name][0]
    source, source_valid = padded_batch(5)
    target, target_valid = padded_batch(6, length=5, lengths=(5, 3, 4))
    for a, b in zip(
        torch_forward(reference, source, source_valid, target, target_valid),
        torch_forward(reloaded, source, source_valid, target, target_valid),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert hf.load(out)[2] == config


def random_params(config, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.3, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


@pytest.mark.parametrize("preset", ["tiny-flan-t5", "tiny-mt5", "tiny-umt5"])
def test_jaxformer_preset_exports_to_transformers(tmp_path, preset):
    config = presets.get(preset)
    params = random_params(config, seed=7)
    out = hf.save(config, params, tmp_path / preset)
    reference = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    expected_type = {"tiny-flan-t5": "t5", "tiny-mt5": "mt5", "tiny-umt5": "umt5"}[preset]
    assert reference.config.model_type == expected_type
    source, source_valid = padded_batch(8)
    target, target_valid = padded_batch(9, length=5, lengths=(5, 5, 2))
    _, logits_ref = torch_forward(reference, source, source_valid, target, target_valid)
    logits = jax.jit(models.build(config).apply)(
        {"params": params},
        jnp.asarray(source),
        jnp.asarray(target),
        source_valid=jnp.asarray(source_valid),
        target_valid=jnp.asarray(target_valid),
    )
    assert_close(logits, logits_ref, target_valid, atol=1e-4)  # random N(0, 0.3) weights: logits ~ 1e2
    reloaded = hf.load(out)[2]
    assert reloaded == config.replace(num_decoder_layers=config.decoder_layers, max_len=reloaded.max_len)


# Presets at published sizes ------------------------------------------------------------------

V1_1_SMALL = dict(d_model=512, d_kv=64, d_ff=1024, num_heads=6, num_layers=8, num_decoder_layers=8)
V1_1_BASE = dict(d_model=768, d_kv=64, d_ff=2048, num_heads=12, num_layers=12, num_decoder_layers=12)
V1_1 = dict(
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    layer_norm_epsilon=1e-6,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
# preset -> (model_type, the published config.json values the family reads, the model card's size or None)
PUBLISHED = {
    "t5-v1_1-small": ("t5", dict(V1_1, **V1_1_SMALL, vocab_size=32128), 76_961_152),  # google/t5-v1_1-small
    "flan-t5-small": ("t5", dict(V1_1, **V1_1_SMALL, vocab_size=32128), 76_961_152),  # google/flan-t5-small
    "flan-t5-base": ("t5", dict(V1_1, **V1_1_BASE, vocab_size=32128), 247_577_856),  # google/flan-t5-base
    "mt5-small": ("mt5", dict(V1_1, **V1_1_SMALL, vocab_size=250112), 300_176_768),  # google/mt5-small
    "mt5-base": ("mt5", dict(V1_1, **V1_1_BASE, vocab_size=250112), 582_401_280),  # google/mt5-base
    "umt5-small": ("umt5", dict(V1_1, **V1_1_SMALL, vocab_size=256384), None),  # google/umt5-small
}
SEPARATE_HEAD = {"shared.weight": np.zeros(1), "lm_head.weight": np.ones(1)}  # stand-ins: a checkpoint's own head


def meta_count(model_type: str, values: dict) -> int:
    """Parameters of transformers' model built on the meta device, as the published checkpoint holds them:
    transformers 5 ties lm_head to `shared` when built, while these checkpoints store a separate lm_head
    (from_pretrained keeps two different tensors apart), so a tied head counts once more."""
    config = transformers.AutoConfig.for_model(model_type, **values)
    with torch.device("meta"):
        model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    assert type(model).__name__ == FAMILY[{"t5": "flan_t5"}.get(model_type, model_type)][0]
    count = sum(p.numel() for p in model.parameters())  # a shared tensor is yielded once
    return count + (model.lm_head.weight.numel() if model.lm_head.weight is model.shared.weight else 0)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_parameter_count_equals_transformers_meta_device(name):
    model_type, published, size = PUBLISHED[name]
    config = presets.get(name)
    arch = hf.convert.architecture_for(config)
    assert arch.model_type == model_type
    leaves = jax.tree.leaves(nn.meta.unbox(models.abstract_params(config)))
    count = sum(leaf.size for leaf in leaves)
    exported = {k: v for k, v in arch.config_to_hf(config).items() if k != "architectures"}
    assert meta_count(model_type, published) == count  # the published values, not our translation
    assert meta_count(model_type, exported) == count
    if size is not None:
        assert count == size
    imported = arch.config_from_hf(published, SEPARATE_HEAD)
    assert imported == config.replace(num_decoder_layers=config.decoder_layers)


# Decoding -----------------------------------------------------------------------------------

STEPS, BEAMS = 8, 4


def hf_generate(reference, source, source_valid, eos: int | None, beams: int) -> np.ndarray:
    """`generate` with every setting that decides the tokens stated; the decoder start column removed."""
    # A cache made without the config: transformers sizes a config's cache by num_layers (2), not the decoder's 3.
    cache = transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache())
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(source),
            cache=cache,
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            do_sample=False,
            num_beams=beams,
            length_penalty=0.0 if beams > 1 else None,  # beam score = sum of log-probs (jaxformer alpha=0)
            early_stopping=False if beams > 1 else None,
            max_new_tokens=STEPS,
            min_length=0,
            eos_token_id=eos,
            pad_token_id=PAD,
            decoder_start_token_id=PAD,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            bad_words_ids=None,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
    out = out[:, 1:].numpy()
    if eos is not None and beams > 1:
        # transformers' beam search fills after EOS with `pad_token_id or eos` (pad 0 is falsy -> EOS); jaxformer pads.
        after = np.cumsum(out == eos, axis=1) - (out == eos) > 0
        out = np.where(after, PAD, out)
    return out


def free_greedy(model, params, source, source_valid) -> np.ndarray:
    """Cache-free reference: one full forward per new token from the decoder start, argmax, no EOS."""
    target = np.full((source.shape[0], STEPS + 1), PAD, np.int64)
    forward = jax.jit(model.apply)
    for step in range(STEPS):
        logits = forward(
            {"params": params}, jnp.asarray(source), jnp.asarray(target), source_valid=jnp.asarray(source_valid)
        )
        target[:, step + 1] = np.asarray(logits[:, step]).argmax(-1)
    return target[:, 1:]


def same_until_padding(ours: np.ndarray, expected: np.ndarray) -> None:
    """HF stops once every row has ended; jaxformer returns all steps, padded after EOS."""
    np.testing.assert_array_equal(ours[:, : expected.shape[1]], expected)
    assert np.all(ours[:, expected.shape[1] :] == PAD)


@pytest.fixture(scope="module")
def decoding_setup(tiny):
    """name -> (reference, params, config, source, source_valid, an EOS id the model emits mid-sequence, the
    cache-free greedy output), built on first use."""
    built: dict = {}

    def get(name: str):
        if name not in built:
            directory, reference = tiny[name]
            model, params, config = hf.load(directory)
            source, source_valid = padded_batch(10, batch=4, length=6, lengths=(6, 4, 2, 5))
            free = free_greedy(model, params, source, source_valid)
            assert len({tuple(row) for row in free}) >= 3, name  # source-dependent
            assert sum(len(set(row)) > 2 for row in free) >= 2, name  # not one repeated token
            # An id row 0 emits mid-sequence that no row starts with and some row never emits: rows end apart.
            starts = set(free[:, 0])
            candidates = [t for t in free[0, 2:6] if t != PAD and t not in starts and any(t not in r for r in free)]
            eos = int(candidates[0]) if candidates else int(free[0, 3])
            built[name] = (reference, params, config, source, source_valid, eos, free)
        return built[name]

    return get


# umT5 (the per-layer bias) runs in the default suite; Flan-T5 and mT5 compile the same search again: slow.
SLOW = pytest.mark.slow
GENERATED_CASES = [pytest.param("flan_t5", marks=SLOW), pytest.param("mt5", marks=SLOW), "umt5"]


@pytest.mark.parametrize("name", GENERATED_CASES)
def test_greedy_matches_transformers_generate(decoding_setup, name):
    reference, params, config, source, source_valid, eos, free = decoding_setup(name)
    np.testing.assert_array_equal(hf_generate(reference, source, source_valid, None, beams=1), free)  # HF = the loop
    ends = [list(row).index(eos) if eos in row else STEPS for row in free]
    assert len(set(ends)) > 1  # rows end at different steps
    expected = hf_generate(reference, source, source_valid, eos, beams=1)
    options = dict(bos_id=PAD, max_new_tokens=STEPS, eos_id=eos, pad_id=PAD)
    same_until_padding(decoding.translate(config, params, source, source_valid, method="greedy", **options), expected)


@pytest.mark.parametrize("name", GENERATED_CASES)
@pytest.mark.parametrize("with_eos", [pytest.param(False, marks=SLOW), True], ids=["no_eos", "eos"])
def test_beam4_matches_transformers_generate(decoding_setup, name, with_eos):
    reference, params, config, source, source_valid, eos, _ = decoding_setup(name)
    eos_id = eos if with_eos else None
    expected = hf_generate(reference, source, source_valid, eos_id, beams=BEAMS)
    options = dict(bos_id=PAD, max_new_tokens=STEPS, eos_id=eos_id, pad_id=PAD)
    ours = decoding.translate(
        config, params, source, source_valid, method="beam", beam_size=BEAMS, alpha=0.0, **options
    )
    same_until_padding(ours, expected)


# CLI: jaxformer translate --model DIR -------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Numbers 12345 and 67890, colours and flavours.",
    "Relative positions in every layer of the stack.",
]


def make_cli_checkpoint(directory, name: str):
    """A tiny random mT5 / umT5 with a byte-level BPE tokenizer.json that appends </s> (as T5's does)."""
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=301,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    cls, config_cls, extra, _ = FAMILY[name]
    sizes = dict(SIZES, vocab_size=tokenizer.get_vocab_size())
    torch.manual_seed(11)
    model = getattr(transformers, cls)(getattr(transformers, config_cls)(**sizes, **extra, tie_word_embeddings=False))
    with torch.no_grad():  # spread the weights out: random T5 inits pick <pad> at every step
        model.lm_head.weight = torch.nn.Parameter(torch.randn(sizes["vocab_size"], WIDTH) * 0.3)
        for key, tensor in model.named_parameters():
            tensor.add_(torch.randn_like(tensor) * 0.1) if "layer_norm" in key else tensor.normal_(0.0, 0.3)
    model.generation_config.max_length = 13  # transformers' output length (start token + 12), jaxformer's default
    model.eval().save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokens = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "pad_token": "<pad>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokens), encoding="utf-8")
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mt5", "umt5"])
def test_cli_translate_a_checkpoint_matches_transformers(tmp_path, capsys, name):
    directory = tmp_path / name
    model = make_cli_checkpoint(directory, name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    texts = SENTENCES[:3]
    expected = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            out = model.generate(ids, do_sample=False, use_cache=False)  # max_length from generation_config.json
            expected.append(tokenizer.decode(out[0, 1:].tolist(), skip_special_tokens=True))
    assert len(set(expected)) > 1 and all(expected)
    args = ["translate", "--model", str(directory)]
    assert cli_main([*args, *(a for t in texts for a in ("--text", t))]) == 0
    assert capsys.readouterr().out.splitlines()[-len(texts) :] == expected
