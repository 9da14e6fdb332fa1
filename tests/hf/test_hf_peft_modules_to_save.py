"""`lora.train_modules` <-> PEFT `modules_to_save` (issue 21, Must show 2 for a classifier LoRA run).

A tiny random BertForSequenceClassification made by `transformers`:
- jaxformer adapters plus a trained `classifier` copy -> hf.peft.save_adapter -> peft.PeftModel.from_pretrained
  on the untouched base: logits within 1e-5 of jaxformer's, the head included (the base's own head gives others);
- a peft adapter with modules_to_save=["classifier"] (head changed in peft) -> hf.peft.load_adapter: jaxformer's
  logits within 1e-5 of peft's;
- an adapter whose saved head has another label count is refused in one line.
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

from jaxformer import hf
from jaxformer.config import LoraConfig
from jaxformer.errors import CheckpointError
from jaxformer.hf import peft as hf_peft
from jaxformer.models import lora as lora_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

ATOL = 1e-5
VOCAB = 97
LABELS = 5


def bert_config(num_labels: int = LABELS):
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=30,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=37,
        max_position_embeddings=40,
        num_labels=num_labels,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("bert_cls") / "base"
    transformers.BertForSequenceClassification(bert_config()).eval().save_pretrained(directory)
    model, params, config = hf.load(directory)
    return directory, model, params, config


def batch():
    rng = np.random.default_rng(5)
    ids = rng.integers(1, VOCAB, (3, 9))
    valid = np.arange(9)[None, :] < np.array([9, 6, 4])[:, None]
    return np.where(valid, ids, 0), valid


def torch_logits(model, ids, valid) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(valid.astype(np.int64))).logits.numpy()


def jax_logits(model, params, adapters, lora, ids, valid) -> np.ndarray:
    out = lora_lib.apply(model, params, adapters, lora, ids, valid=valid)
    return np.asarray(out["logits"] if isinstance(out, dict) else out)


def reference(directory):
    return transformers.BertForSequenceClassification.from_pretrained(directory, attn_implementation="eager").eval()


def test_trained_head_travels_as_modules_to_save_and_peft_gives_the_same_logits(base, tmp_path):
    directory, model, params, config = base
    lora = LoraConfig(rank=2, alpha=3.0, targets=("query", "value"), train_modules=("classifier",))
    rng = np.random.default_rng(2)
    adapters = jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x) + rng.normal(0.0, 0.3, x.shape), jnp.float32),
        lora_lib.init_lora(lora, params, jax.random.PRNGKey(0)),
    )
    out = hf_peft.save_adapter(config, lora, adapters, tmp_path / "adapter")
    written = json.loads((out / "adapter_config.json").read_text())
    assert written["modules_to_save"] == ["classifier"]

    ids, valid = batch()
    ours = jax_logits(model, params, adapters, lora, ids, valid)
    plain = torch_logits(reference(directory), ids, valid)
    theirs = torch_logits(peft.PeftModel.from_pretrained(reference(directory), out).eval(), ids, valid)
    assert np.abs(theirs - plain).max() > 100 * ATOL  # adapters and head changed the function
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)

    # Only the adapters, without the head copy, would not be PEFT's function: the head is what carries it.
    no_head = {k: v for k, v in adapters.items() if k != "classifier"}
    no_head_lora = LoraConfig(rank=2, alpha=3.0, targets=("query", "value"))
    assert np.abs(jax_logits(model, params, no_head, no_head_lora, ids, valid) - theirs).max() > 100 * ATOL

    lora_back, adapters_back = hf_peft.load_adapter(config, out)
    assert lora_back.train_modules == ("classifier",)
    np.testing.assert_allclose(jax_logits(model, params, adapters_back, lora_back, ids, valid), ours, atol=ATOL)


def test_peft_adapter_with_a_changed_head_imports_with_peft_logits(base, tmp_path):
    directory, model, params, config = base
    torch.manual_seed(4)
    wrapped = peft.get_peft_model(
        reference(directory),
        peft.LoraConfig(
            r=3,
            lora_alpha=6,
            target_modules=r".*encoder\.layer\.\d+\..*(query|key|dense)",
            modules_to_save=["classifier"],
            init_lora_weights=False,
        ),
    ).eval()
    with torch.no_grad():  # the trained head: a copy inside PEFT's wrapper, changed
        head = wrapped.base_model.model.classifier.modules_to_save["default"]
        head.weight.add_(torch.randn_like(head.weight))
        head.bias.add_(torch.randn_like(head.bias))
    wrapped.save_pretrained(tmp_path / "adapter")
    ids, valid = batch()
    theirs = torch_logits(wrapped, ids, valid)

    lora, adapters = hf_peft.load_adapter(config, tmp_path / "adapter")
    assert lora.train_modules == ("classifier",) and lora.rank == 3
    ours = jax_logits(model, params, adapters, lora, ids, valid)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    merged = hf_peft.save_merged(config, params, adapters, lora, tmp_path / "merged")
    np.testing.assert_allclose(torch_logits(reference(merged), ids, valid), theirs, atol=ATOL, rtol=0)


def test_head_of_another_label_count_is_refused_in_one_line(base, tmp_path):
    _, _, _, config = base
    other = transformers.BertForSequenceClassification(bert_config(num_labels=LABELS + 2))
    peft.get_peft_model(
        other, peft.LoraConfig(r=2, target_modules=["query"], modules_to_save=["classifier"])
    ).save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError) as err:
        hf_peft.load_adapter(config, tmp_path / "other")
    assert "\n" not in str(err.value) and "label count" in str(err.value)
