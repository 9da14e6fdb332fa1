"""RoBERTa, XLM-RoBERTa and DistilBERT against `transformers` (PyTorch CPU): every head, both directions.

Tiny random models made by `transformers` itself (hidden 36, 3 heads, FFN 52, vocabulary 97, 2 layers,
40 positions) are saved with save_pretrained, imported, and compared in float32 on padded batches
(right and left padding, pad tokens carrying the checkpoint's pad id, so RoBERTa's padding-offset
positions are exercised). Export: save -> bit-exact tensors, the head's class in `architectures`, and
`from_pretrained` giving the same outputs; presets at the published sizes count the parameters of
`transformers` on the meta device.
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
from support.wordpiece import VOCAB as WORDPIECE
from support.wordpiece import write_tokenizer

from jaxformer import cli, encoder_tasks, hf, models, presets
from jaxformer.architectures import distilbert as distilbert_arch
from jaxformer.architectures import roberta as roberta_arch
from jaxformer.decoding.spans import best_spans, context_mask
from jaxformer.errors import CheckpointError
from jaxformer.hf import distilbert as distilbert_hf
from jaxformer.hf import roberta as roberta_hf
from jaxformer.hf.convert import ARCHITECTURES, architecture_for, nested, param_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, WIDTH, HEADS, FFN, LAYERS, MAX_POS = 97, 36, 3, 52, 2, 40
ATOL = 1e-5
HEAD_SUFFIX = {
    "none": "Model",
    "mlm": "ForMaskedLM",
    "classification": "ForSequenceClassification",
    "qa": "ForQuestionAnswering",
    "token_classification": "ForTokenClassification",
}
CLASS_PREFIX = {"roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert"}


def hf_config(model_type: str, **extra):
    tf = transformers
    if model_type == "distilbert":
        sizes = dict(dim=WIDTH, n_heads=HEADS, hidden_dim=FFN, n_layers=LAYERS)
        return tf.DistilBertConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POS, **sizes, **extra)
    sizes = dict(hidden_size=WIDTH, num_attention_heads=HEADS, intermediate_size=FFN, num_hidden_layers=LAYERS)
    config_class = tf.RobertaConfig if model_type == "roberta" else tf.XLMRobertaConfig
    published = dict(type_vocab_size=1, layer_norm_eps=1e-5)  # as roberta-base's config.json (class defaults: 2, 1e-12)
    return config_class(vocab_size=VOCAB, max_position_embeddings=MAX_POS, **published, **sizes, **extra)


# name -> (model_type, head, extra config values)
CASES: dict[str, tuple[str, str, dict]] = {}
for _type, _extra in (
    ("roberta", dict(initializer_range=0.2)),
    ("xlm-roberta", dict(initializer_range=0.2, pad_token_id=4, hidden_act="gelu_new")),  # another pad id
    ("distilbert", dict(initializer_range=0.2, activation="gelu")),
):
    for _head in HEAD_SUFFIX:
        extra = dict(_extra, num_labels=5) if _head in ("classification", "token_classification") else _extra
        if _type == "xlm-roberta" and _head == "mlm":
            extra = dict(extra, hidden_act="gelu")  # the lm_head applies gelu whatever hidden_act says
        CASES[f"{_type}-{_head}"] = (_type, _head, extra)
CASES["distilbert-sinusoidal"] = ("distilbert", "none", dict(sinusoidal_pos_embds=True, initializer_range=0.2))


def model_class(model_type: str, head: str):
    return getattr(transformers, CLASS_PREFIX[model_type] + HEAD_SUFFIX[head])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (directory written by save_pretrained, the torch model)."""
    root = tmp_path_factory.mktemp("hf_encoder_families")
    out = {}
    for index, (name, (model_type, head, extra)) in enumerate(CASES.items()):
        torch.manual_seed(index)
        model = model_class(model_type, head)(hf_config(model_type, **extra)).eval()
        model.save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


def padded_batch(seed: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """ids [4, 9] (rows 9, 6, 3 tokens right-padded, one 5 left-padded) with pad tokens = `pad`; valid [4, 9]."""
    rng = np.random.default_rng(seed)
    real = [t for t in range(3, VOCAB) if t != pad]
    ids = rng.choice(real, (4, 9))
    valid = np.arange(9)[None, :] < np.array([9, 6, 3, 9])[:, None]
    valid[3, :4] = False
    return np.where(valid, ids, pad), valid


def torch_outputs(model, ids: np.ndarray, valid: np.ndarray):
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(valid.astype(np.int64)), output_hidden_states=True)


def assert_close(ours, ref, valid=None, atol=ATOL) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref) if valid is None else np.abs(ours - ref)[valid]
    assert diff.max() < atol, f"max abs diff {diff.max():.3g} >= {atol} (reference scale {np.abs(ref).max():.3g})"
    assert np.abs(ref).max() > 100 * atol  # the comparison is not between near-zero numbers
    return float(diff.max())


def compare_heads(ours: dict, out, head: str, valid: np.ndarray) -> None:
    """Every output of `ours` (a jaxformer encoder's dict) against the transformers output `out`."""
    assert_close(ours["hidden"], out.hidden_states[-1].numpy(), valid)
    if head == "none" and getattr(out, "pooler_output", None) is not None:
        assert_close(ours["pooled"], out.pooler_output.numpy())
    if head in ("mlm", "token_classification"):
        assert_close(ours["logits"], out.logits.numpy(), valid)
    elif head == "classification":
        assert_close(ours["logits"], out.logits.numpy())
    elif head == "qa":
        assert_close(ours["start_logits"], out.start_logits.numpy(), valid)
        assert_close(ours["end_logits"], out.end_logits.numpy(), valid)


def apply(model, params, ids, valid):
    """The forward pass, eagerly (tiny models: faster than compiling each one)."""
    return model.apply({"params": params}, jnp.asarray(ids), valid=jnp.asarray(valid))


# Import: forward parity ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_hidden_states_and_head_logits_match_transformers(tiny, name):
    model_type, head, extra = CASES[name]
    directory, reference = tiny[name]
    model, params, config = hf.load(directory)
    assert config.encoder_head == head and config.family == "encoder_only" and config.norm_position == "post"
    if model_type == "distilbert":
        assert config.num_token_types == 0 and not config.pooler and config.norm_eps == 1e-12
        assert config.pooler_activation == "relu" and config.position_rule == "index"
    else:
        assert config.position_rule == "padding_offset" and config.pad_token_id == extra.get("pad_token_id", 1)
        assert config.num_token_types == 1 and config.norm_eps == 1e-5
        assert config.pooler == (head == "none")  # only RobertaModel carries a pooler
    if head in ("classification", "token_classification"):
        assert config.num_classes == 5
    ids, valid = padded_batch(len(name), config.pad_token_id)
    compare_heads(apply(model, params, ids, valid), torch_outputs(reference, ids, valid), head, valid)


def test_roberta_positions_depend_on_the_pad_tokens(tiny):
    """Explicit 0..T-1 positions (BERT's) give other hidden states: the padding offset is what matches."""
    directory, reference = tiny["roberta-none"]
    model, params, config = hf.load(directory)
    ids, valid = padded_batch(0, config.pad_token_id)
    expected = torch_outputs(reference, ids, valid).last_hidden_state.numpy()
    plain = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    wrong = jax.jit(model.apply)({"params": params}, jnp.asarray(ids), valid=jnp.asarray(valid), positions=plain)
    assert np.abs(np.asarray(wrong["hidden"]) - expected)[valid].max() > 1e-2


# Export: round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_save_is_bit_exact_and_from_pretrained_gives_the_same_outputs(tiny, tmp_path, name):
    model_type, head, _ = CASES[name]
    directory, reference = tiny[name]
    _, params, config = hf.load(directory)
    out = hf.save(config, params, tmp_path / name, model_type=model_type if model_type == "xlm-roberta" else None)
    original, written = load_file(str(directory / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(written) == sorted(original)
    for key, tensor in original.items():
        assert written[key].dtype == tensor.dtype and written[key].tobytes() == tensor.tobytes(), key
    exported = json.loads((out / "config.json").read_text())
    assert exported["model_type"] == model_type
    assert exported["architectures"] == [type(reference).__name__]
    reloaded = transformers.AutoConfig.from_pretrained(out)
    assert type(reloaded) is type(reference.config)
    again = model_class(model_type, head).from_pretrained(out).eval()
    ids, valid = padded_batch(1, config.pad_token_id)
    before, after = torch_outputs(reference, ids, valid), torch_outputs(again, ids, valid)
    for key in ("last_hidden_state", "logits", "start_logits", "end_logits", "pooler_output"):
        if getattr(before, key, None) is not None:
            assert torch.equal(getattr(before, key), getattr(after, key)), key


def random_params(config, seed: int) -> dict:
    """Params of `config` drawn with NumPy (fast: no XLA compile of the model's init)."""
    rng = np.random.default_rng(seed)
    flat = {path: rng.normal(0.0, 0.2, shape).astype(np.float32) for path, shape in param_shapes(config).items()}
    return jax.tree.map(jnp.asarray, nested(flat))


def export_cases() -> list:
    """(preset, model_type, head): the heads the round trips above do not reach from a preset run by default."""
    out = []
    for preset, model_type in (("tiny-roberta", None), ("tiny-roberta", "xlm-roberta"), ("tiny-distilbert", None)):
        for head in HEAD_SUFFIX:
            default = head in ("mlm", "classification") and (model_type is None or head == "classification")
            marks = () if default else (pytest.mark.slow,)
            out.append(pytest.param(preset, model_type, head, marks=marks, id=f"{preset}-{model_type}-{head}"))
    return out


@pytest.mark.parametrize("preset, model_type, head", export_cases())
def test_jaxformer_to_transformers_gives_same_outputs(tmp_path, preset, model_type, head):
    overrides = {"num_classes": 4} if head in ("classification", "token_classification") else {}
    config = presets.get(preset, encoder_head=head, **overrides)
    params = random_params(config, seed=3)
    out = hf.save(config, params, tmp_path / "out", model_type=model_type)
    exported = json.loads((out / "config.json").read_text())
    written_type = model_type or architecture_for(config).model_type
    assert exported["model_type"] == written_type == ("distilbert" if "distil" in preset else model_type or "roberta")
    assert exported["architectures"] == [CLASS_PREFIX[written_type] + HEAD_SUFFIX[head]]
    reference = model_class(written_type, head).from_pretrained(out).eval()
    ids, valid = padded_batch(5, config.pad_token_id)
    compare_heads(apply(models.build(config), params, ids, valid), torch_outputs(reference, ids, valid), head, valid)
    _, reloaded, reloaded_config = hf.load(out)
    if preset == "tiny-roberta" and head == "classification":  # classifier.dense is the pooler: no separate one
        config = config.replace(pooler=False)
    assert reloaded_config == config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reloaded), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# Fine-tuning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["roberta-none", "xlm-roberta-mlm", "distilbert-none"])
def test_finetune_init_adds_a_classifier_that_transformers_computes_alike(tiny, tmp_path, name):
    model_type, _, _ = CASES[name]
    directory, _ = tiny[name]
    config, params = hf.finetune_init(directory, encoder_head="classification", num_classes=3, seed=1)
    assert config.encoder_head == "classification" and config.num_classes == 3
    assert config.pooler_activation == ("relu" if model_type == "distilbert" else "tanh")
    _, body, _ = hf.load(directory)
    for key in ("embed", "embedding", "encoder"):  # the pretrained body is kept as it was
        for a, b in zip(jax.tree.leaves(body[key]), jax.tree.leaves(params[key]), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    assert params["classifier"]["dense"]["kernel"].shape == (WIDTH, 3)
    out = hf.save(config, params, tmp_path / "cls", model_type=model_type if model_type == "xlm-roberta" else None)
    reference = model_class(model_type, "classification").from_pretrained(out).eval()
    ids, valid = padded_batch(7, config.pad_token_id)
    ours = apply(models.build(config), params, ids, valid)
    theirs = torch_outputs(reference, ids, valid)
    assert_close(ours["logits"], theirs.logits.numpy(), atol=ATOL)


# Question answering through jaxformer.inference and the CLI ----------------------------------------


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_answer_gives_the_span_of_transformers_logits(tmp_path, capsys, model_type):
    """`encoder_tasks.answer` / `jaxformer answer` on a tiny QA model with a real WordPiece tokenizer.json: the spans
    best_spans picks from transformers' own logits on the same ids (pad id 0 = the tokenizer's [PAD])."""
    question, context = (
        "Where is the capital of France?",
        "Paris is the capital of France. The old city lies on the Seine.",
    )
    sizes = dict(vocab_size=len(WORDPIECE), max_position_embeddings=64, initializer_range=0.3, pad_token_id=0)
    if model_type == "roberta":  # the tokenizer's pairs carry type id 1
        config = transformers.RobertaConfig(**sizes, hidden_size=21, num_attention_heads=3, intermediate_size=29)
        config.update(dict(num_hidden_layers=2, type_vocab_size=2, layer_norm_eps=1e-5))
    else:
        config = transformers.DistilBertConfig(**sizes, dim=21, n_heads=3, hidden_dim=29, n_layers=2)
    torch.manual_seed(5)
    reference = model_class(model_type, "qa")(config).eval()
    reference.save_pretrained(tmp_path)
    tokenizer = write_tokenizer(tmp_path)
    answers = encoder_tasks.answer(str(tmp_path), question, context, max_answer_length=5, top_k=3)
    encoding = tokenizer.encode(question, context)
    inputs = dict(attention_mask=torch.ones(1, len(encoding.ids), dtype=torch.int64))
    if model_type == "roberta":
        inputs["token_type_ids"] = torch.tensor([encoding.type_ids])
    with torch.no_grad():
        out = reference(torch.tensor([encoding.ids]), **inputs)
    allowed = context_mask(encoding.sequence_ids)
    expected = best_spans(out.start_logits[0].numpy(), out.end_logits[0].numpy(), allowed, 5, 3)
    assert len(answers) == 3 and [(a.start_token, a.end_token) for a in answers] == [(s.start, s.end) for s in expected]
    capsys.readouterr()
    code = cli.main(["answer", "--model", str(tmp_path), "--question", question, "--context", context])
    captured = capsys.readouterr()
    top = encoder_tasks.answer(str(tmp_path), question, context)[0]
    assert top.text and (code, captured.out, captured.err) == (0, top.text + "\n", "")


# Presets: published sizes ----------------------------------------------------------------------

PUBLISHED: dict[str, tuple[str, dict, int]] = {  # config.json values of the Hub repos, published size
    "roberta-base": (  # FacebookAI/roberta-base
        "roberta",
        dict(
            vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, hidden_act="gelu",
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
        ),
        124_645_632,
    ),
    "xlm-roberta-base": (  # FacebookAI/xlm-roberta-base
        "xlm-roberta",
        dict(
            vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
            pad_token_id=1, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            initializer_range=0.02,
        ),
        278_043_648,
    ),
    "distilbert-base-uncased": (  # distilbert/distilbert-base-uncased
        "distilbert",
        dict(
            vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512,
            activation="gelu", dropout=0.1, attention_dropout=0.1, pad_token_id=0, sinusoidal_pos_embds=False,
            initializer_range=0.02,
        ),
        66_362_880,
    ),
}  # fmt: skip


def meta_count(model_type: str, values: dict) -> int:
    """Parameters of AutoModel(config) (the base model, with RoBERTa's pooler) built on the meta device."""
    config = transformers.AutoConfig.for_model(model_type, **values)
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(config)
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def abstract_count(config) -> int:
    leaves = jax.tree.leaves(nn.meta.unbox(models.abstract_params(config)))
    return sum(leaf.size for leaf in leaves)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_count_equals_transformers_meta_device(name):
    model_type, published, size = PUBLISHED[name]
    config = presets.get(name)
    arch = ARCHITECTURES[model_type]
    exported = arch.config_to_hf(config)
    assert exported["architectures"][0].endswith("Model")
    assert meta_count(model_type, published) == size  # the published config, not our translation
    assert meta_count(model_type, exported) == size
    assert abstract_count(config) == size
    imported = arch.config_from_hf(published, {"pooler.dense.weight": np.zeros(1)} if config.pooler else {})
    assert imported == config


@pytest.mark.parametrize("name", ["tiny-roberta", "tiny-distilbert"])
def test_tiny_twins_are_odd_sized_and_count_like_transformers(name):
    config = presets.get(name)
    assert len({config.vocab_size, config.d_model, config.d_ff}) == 3 and config.vocab_size % 2
    model_type = architecture_for(config).model_type
    assert meta_count(model_type, ARCHITECTURES[model_type].config_to_hf(config)) == abstract_count(config)


@pytest.mark.parametrize("module, arch", [(roberta_hf, roberta_arch), (distilbert_hf, distilbert_arch)])
def test_export_checks_the_fixed_fields_that_no_key_carries(module, arch):
    """FIXED is stated once: every fixed field is either written through a Key, decided by the tensors, or checked."""
    carried = {key.field for key in module.KEYS}
    assert set(arch.FIXED) - carried - set(module.DERIVED) <= set(module.EXPORT_FIELDS)
    assert not carried & set(module.EXPORT_FIELDS)
    for field, value in arch.FIXED.items():
        if field in module.EXPORT_FIELDS:
            assert module.EXPORT_FIELDS[field] == value, field


# Refusals ------------------------------------------------------------------------------------


def test_exports_a_family_cannot_represent_are_one_clear_error(tmp_path):
    roberta = presets.get("tiny-roberta", encoder_head="mlm", activation="relu")
    with pytest.raises(CheckpointError, match="its lm_head always applies gelu"):
        hf.save(roberta, random_params(roberta, 0), tmp_path / "a")
    distil = presets.get("tiny-distilbert", encoder_head="classification", pooler_activation="tanh")
    with pytest.raises(CheckpointError, match="pre_classifier applies ReLU"):
        hf.save(distil, random_params(distil, 0), tmp_path / "b")
    with pytest.raises(CheckpointError, match="position_rule='padding_offset'"):
        hf.save(roberta.replace(activation="gelu"), random_params(roberta, 0), tmp_path / "c", model_type="bert")
    with pytest.raises(ValueError, match="model_type='robert' is not supported"):
        hf.save(roberta, random_params(roberta, 0), tmp_path / "d", model_type="robert")
