"""PEFT parity (issue 21, Must show 2): tiny random GPT-2, Llama, BERT and T5 made by `transformers`.

- jaxformer adapters (random, B != 0) -> hf.peft.save_adapter -> peft.PeftModel.from_pretrained on the same
  base: logits within 1e-5 of jaxformer's LoRA forward;
- a peft adapter (init_lora_weights=False: B != 0) saved by save_pretrained -> hf.peft.load_adapter: jaxformer's
  logits within 1e-5 of peft's;
- the merged export (hf.peft.save_merged) loaded by transformers gives peft's logits too.
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
from jaxformer.hf import peft as hf_peft
from jaxformer.models import lora as lora_lib
from jaxformer.models.stack import stack_layer_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

ATOL = 1e-5
VOCAB = 99
# family -> (HF model class, config kwargs, PEFT target_modules, jaxformer targets)
CASES = {
    "gpt2": (
        "GPT2LMHeadModel",
        dict(model_type="gpt2", vocab_size=VOCAB, n_positions=40, n_embd=36, n_layer=2, n_head=4, n_inner=37),
        ["c_attn", "c_proj", "c_fc"],
        ("query", "value", "out", "up", "down"),  # key not adapted: c_attn's middle block of B stays zero
    ),
    "llama": (
        "LlamaForCausalLM",
        dict(
            model_type="llama",
            vocab_size=VOCAB,
            hidden_size=30,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ("query", "key", "value", "out", "gate", "up", "down"),
    ),
    "bert": (
        "BertForMaskedLM",
        dict(
            model_type="bert",
            vocab_size=VOCAB,
            hidden_size=36,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=40,
        ),
        r".*encoder\.layer\.\d+\..*(query|key|value|dense)",  # not the MLM head's transform.dense
        ("query", "key", "value", "out", "up", "down"),
    ),
    "t5": (
        "T5ForConditionalGeneration",
        dict(
            model_type="t5",
            vocab_size=VOCAB,
            d_model=36,
            d_kv=10,
            d_ff=37,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
        ),
        ["q", "k", "v", "o", "wi", "wo"],
        ("query", "value", "out", "down"),
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def family(request, tmp_path_factory):
    """(name, directory of the saved HF base model, jaxformer model, params, config)."""
    name = request.param
    cls, kwargs, _, _ = CASES[name]
    kwargs = dict(kwargs)
    model_type = kwargs.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    base = getattr(transformers, cls)(hf_config).eval()
    directory = tmp_path_factory.mktemp(name) / "base"
    base.save_pretrained(directory)
    model, params, config = hf.load(directory)
    return name, directory, model, params, config


def base_model(name, directory):
    return getattr(transformers, CASES[name][0]).from_pretrained(directory, attn_implementation="eager").eval()


def batch(name):
    rng = np.random.default_rng(7)
    ids = rng.integers(1, VOCAB, (3, 7))
    valid = np.arange(7)[None, :] < np.array([7, 5, 3])[:, None]
    return np.where(valid, ids, 0), valid


def torch_logits(name, model, ids, valid):
    mask = torch.tensor(valid.astype(np.int64))
    with torch.no_grad():
        if name == "t5":
            out = model(input_ids=torch.tensor(ids), attention_mask=mask, decoder_input_ids=torch.tensor(ids[:, :5]))
        else:
            out = model(input_ids=torch.tensor(ids), attention_mask=mask)
    return out.logits.numpy()


def jax_logits(name, model, params, adapters, lora, ids, valid):
    def forward(params, adapters):
        if name == "t5":
            return lora_lib.apply(model, params, adapters, lora, ids, ids[:, :5], source_valid=valid)
        out = lora_lib.apply(model, params, adapters, lora, ids, valid=valid)
        return out["logits"] if isinstance(out, dict) else out

    return np.asarray(jax.jit(forward)(params, adapters))


def rows(name, valid):
    return None if name == "t5" else valid


def close(ours, ref, valid, atol=ATOL) -> float:
    diff = np.abs(ours - ref) if valid is None else np.abs(ours - ref)[valid]
    assert ours.shape == ref.shape
    assert diff.max() < atol, f"max abs diff {diff.max():.3g} (reference scale {np.abs(ref).max():.3g})"
    print(f"max abs diff {diff.max():.2e} (logits up to {np.abs(ref).max():.2f})")  # shown with pytest -s
    return float(diff.max())


def changed(a, b, valid) -> float:
    """How far the adapters moved the logits (so that a parity check cannot pass with adapters ignored)."""
    diff = np.abs(a - b) if valid is None else np.abs(a - b)[valid]
    return float(diff.max())


def test_exported_adapter_loads_in_peft_with_the_same_logits(family, tmp_path):
    name, directory, model, params, config = family
    lora = LoraConfig(rank=3, alpha=5.0, targets=CASES[name][3])
    rng = np.random.default_rng(1)
    adapters = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(0.0, 0.3, x.shape), jnp.float32),
        lora_lib.init_lora(lora, params, jax.random.PRNGKey(0)),
    )
    out = hf_peft.save_adapter(config, lora, adapters, tmp_path / "adapter", base_model_name_or_path=str(directory))
    written = json.loads((out / "adapter_config.json").read_text())
    assert written["r"] == 3 and written["lora_alpha"] == 5.0
    ids, valid = batch(name)
    ours = jax_logits(name, model, params, adapters, lora, ids, valid)
    base = base_model(name, directory)
    plain = torch_logits(name, base, ids, valid)
    loaded = peft.PeftModel.from_pretrained(base, out).eval()
    theirs = torch_logits(name, loaded, ids, valid)
    assert changed(theirs, plain, rows(name, valid)) > 100 * ATOL
    close(ours, theirs, rows(name, valid))
    if name == "gpt2":  # fused c_attn: rank 2r (query and value adapted), alpha scaled alike
        assert set(written["rank_pattern"].values()) == {6} and set(written["alpha_pattern"].values()) == {10.0}

    # ... and back: the PEFT directory re-imported gives the same function.
    lora_back, adapters_back = hf_peft.load_adapter(config, out)
    close(jax_logits(name, model, params, adapters_back, lora_back, ids, valid), ours, rows(name, valid))

    # scan_layers: stacked adapters write the same file, and a scanned config reads them back stacked.
    scanned = {k: stack_layer_params(v, len([n for n in v if n.startswith("layers_")])) for k, v in adapters.items()}
    scan_config = config.replace(scan_layers=True)
    again = hf_peft.save_adapter(scan_config, lora, scanned, tmp_path / "scanned")
    assert (again / "adapter_model.safetensors").read_bytes() == (out / "adapter_model.safetensors").read_bytes()
    _, stacked = hf_peft.load_adapter(scan_config, out)
    _, unrolled = hf_peft.load_adapter(config, out)
    want = {k: stack_layer_params(v, len([n for n in v if n.startswith("layers_")])) for k, v in unrolled.items()}
    assert jax.tree.structure(stacked) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(stacked), jax.tree.leaves(want), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_peft_trained_adapter_imports_with_the_same_logits_and_merges(family, tmp_path):
    name, directory, model, params, config = family
    torch.manual_seed(3)
    peft_config = peft.LoraConfig(
        r=4,
        lora_alpha=7,
        target_modules=CASES[name][2],
        init_lora_weights=False,  # random B: a non-trivial adapter
        fan_in_fan_out=name == "gpt2",
    )
    wrapped = peft.get_peft_model(base_model(name, directory), peft_config).eval()
    wrapped.save_pretrained(tmp_path / "adapter")
    ids, valid = batch(name)
    theirs = torch_logits(name, wrapped, ids, valid)

    lora, adapters = hf_peft.load_adapter(config, tmp_path / "adapter")
    assert lora.rank == 4 and lora.alpha == 7.0
    ours = jax_logits(name, model, params, adapters, lora, ids, valid)
    plain = jax_logits(name, model, params, jax.tree.map(jnp.zeros_like, adapters), lora, ids, valid)
    assert changed(ours, plain, rows(name, valid)) > 100 * ATOL
    close(ours, theirs, rows(name, valid))

    merged_dir = hf_peft.save_merged(config, params, adapters, lora, tmp_path / "merged")
    merged = base_model(name, merged_dir)
    close(torch_logits(name, merged, ids, valid), theirs, rows(name, valid))


def test_adapter_of_another_architecture_is_refused_in_one_line(family, tmp_path):
    name, _, _, _, config = family
    other = "bert" if name != "bert" else "gpt2"
    cls, kwargs, targets, _ = CASES[other]
    kwargs = dict(kwargs)
    hf_config = transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    wrapped = peft.get_peft_model(
        getattr(transformers, cls)(hf_config),
        peft.LoraConfig(r=2, target_modules=targets, fan_in_fan_out=other == "gpt2"),
    )
    wrapped.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError) as err:
        hf_peft.load_adapter(config, tmp_path / "other")
    assert "\n" not in str(err.value) and ("another" in str(err.value) or "not an attention" in str(err.value))
    with pytest.raises(ValueError, match=r"adapter_config\.json is missing"):
        hf_peft.load_adapter(config, tmp_path)
