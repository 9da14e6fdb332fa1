"""BERT's question-answering and token-classification heads against `transformers`.

Tiny random BertForQuestionAnswering / BertForTokenClassification (odd sizes) built by
`transformers`, loaded by jaxformer.hf, compared on padded batches in float32; save ->
from_pretrained round trips; finetune_init of a plain BertModel gives the new heads.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxformer import hf, models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, WIDTH, HEADS, FFN, MAX_LEN, CLASSES = 97, 36, 4, 37, 41, 5
ATOL = 1e-5


def bert_config(**extra) -> object:
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=MAX_LEN,
        type_vocab_size=2,
        initializer_range=0.2,
        **extra,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (directory written by save_pretrained, torch model in eval mode)."""
    root = tmp_path_factory.mktemp("bert_heads")
    torch.manual_seed(0)
    made = {
        "qa": transformers.BertForQuestionAnswering(bert_config()),
        "token_classification": transformers.BertForTokenClassification(bert_config(num_labels=CLASSES)),
        "base": transformers.BertModel(bert_config()),
    }
    with torch.no_grad():  # heads start at zero bias: give them some so the test sees the biases
        made["qa"].qa_outputs.bias.normal_(0.0, 0.5)
        made["token_classification"].classifier.bias.normal_(0.0, 0.5)
    out = {}
    for name, model in made.items():
        model.eval().save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


def padded_batch(seed: int, lengths=(9, 6, 3), length: int = 9):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (len(lengths), length))
    valid = np.arange(length)[None, :] < np.array(lengths)[:, None]
    types = (np.arange(length)[None, :] >= 4).astype(np.int64) * valid
    return np.where(valid, ids, 0), valid, types


def reference(model, ids, valid, types):
    with torch.no_grad():
        return model(
            torch.tensor(ids),
            attention_mask=torch.tensor(valid.astype(np.int64)),
            token_type_ids=torch.tensor(types),
            output_hidden_states=True,
        )


def assert_close(ours, ref, valid=None) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref) if valid is None else np.abs(ours - ref)[valid]
    assert diff.max() <= ATOL, f"max abs diff {diff.max():.3g}"
    assert np.abs(ref).max() > 0.1  # not a comparison of near-zero numbers


def run(directory, ids, valid, types):
    model, params, config = hf.load(directory)
    out = jax.jit(model.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(types), valid=jnp.asarray(valid))
    return out, config


def test_qa_head_matches_transformers(tiny):
    directory, torch_model = tiny["qa"]
    ids, valid, types = padded_batch(1)
    out, config = run(directory, ids, valid, types)
    assert config.encoder_head == "qa" and not config.pooler
    expected = reference(torch_model, ids, valid, types)
    assert sorted(out) == ["end_logits", "hidden", "start_logits"]
    assert_close(out["hidden"], expected.hidden_states[-1].numpy(), valid)
    assert_close(out["start_logits"], expected.start_logits.numpy(), valid)
    assert_close(out["end_logits"], expected.end_logits.numpy(), valid)


def test_token_classification_head_matches_transformers(tiny):
    directory, torch_model = tiny["token_classification"]
    ids, valid, types = padded_batch(2)
    out, config = run(directory, ids, valid, types)
    assert config.encoder_head == "token_classification" and config.num_classes == CLASSES and not config.pooler
    expected = reference(torch_model, ids, valid, types)
    assert out["logits"].shape == (3, 9, CLASSES)
    assert_close(out["hidden"], expected.hidden_states[-1].numpy(), valid)
    assert_close(out["logits"], expected.logits.numpy(), valid)


@pytest.mark.parametrize("name", ["qa", "token_classification"])
def test_save_then_from_pretrained_is_bit_exact(tiny, tmp_path, name):
    directory, torch_model = tiny[name]
    _, params, config = hf.load(directory)
    out = hf.save(config, params, tmp_path / name)
    original, written = load_file(str(directory / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(written) == sorted(original)
    for key, tensor in original.items():
        assert written[key].dtype == tensor.dtype and written[key].tobytes() == tensor.tobytes(), key
    saved = json.loads((out / "config.json").read_text())
    cls = {"qa": "BertForQuestionAnswering", "token_classification": "BertForTokenClassification"}[name]
    assert saved["architectures"] == [cls]
    reloaded = getattr(transformers, cls).from_pretrained(out).eval()
    ids, valid, types = padded_batch(3)
    a, b = reference(torch_model, ids, valid, types), reference(reloaded, ids, valid, types)
    for field in ("start_logits", "end_logits") if name == "qa" else ("logits",):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_token_classifier_with_a_pooler_is_told_apart_by_architectures(tiny, tmp_path):
    """A ForTokenClassification whose checkpoint also holds a pooler is still a token classifier."""
    directory, _ = tiny["token_classification"]
    base = hf.load(tiny["base"][0])[1]
    _, params, config = hf.load(directory)
    params = dict(params, pooler=base["pooler"])
    out = hf.save(config.replace(pooler=True), params, tmp_path / "with_pooler")
    assert hf.load(out)[2].encoder_head == "token_classification"
    saved = json.loads((out / "config.json").read_text())
    saved["architectures"] = ["BertForSequenceClassification"]
    (out / "config.json").write_text(json.dumps(saved))
    assert hf.load(out)[2].encoder_head == "classification"


@pytest.mark.parametrize("head", ["qa", "token_classification"])
def test_finetune_init_adds_the_new_head(tiny, head):
    directory, torch_model = tiny["base"]
    extra = {"num_classes": 4} if head == "token_classification" else {}
    config, params = hf.finetune_init(directory, encoder_head=head, seed=3, **extra)
    _, loaded, _ = hf.load(directory)
    module = {"qa": "qa_head", "token_classification": "token_classifier"}[head]
    kernel = np.asarray(params[module]["dense"]["kernel"])
    assert kernel.shape == (WIDTH, 2 if head == "qa" else 4)
    assert 0.5 < kernel.std() / config.initializer_range < 1.5  # a fresh head drawn at the checkpoint's scale ...
    np.testing.assert_array_equal(params[module]["dense"]["bias"], 0.0)
    np.testing.assert_array_equal(params["embed"]["embedding"], loaded["embed"]["embedding"])  # ... body kept
    ids, valid, types = padded_batch(4)
    out = models.build(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(types), valid=jnp.asarray(valid))
    expected = reference(torch_model, ids, valid, types)
    assert_close(out["hidden"], expected.last_hidden_state.numpy(), valid)
    shapes = {"qa": {"start_logits": (3, 9), "end_logits": (3, 9)}, "token_classification": {"logits": (3, 9, 4)}}
    assert {k: out[k].shape for k in shapes[head]} == shapes[head]
