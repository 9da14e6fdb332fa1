"""`model.init_from` through the Python API (jaxformer.hf.finetune.prepare): tiny checkpoints made by
`transformers` itself, checked against `transformers` on the same weights.

- A GPT-2 / Llama / BERT checkpoint imported for a run whose tokenizer is the checkpoint's own (ids
  shifted by 3): the remapped embedding gives exactly transformers' logits (hidden states for BERT)
  on a padded batch, column `ours` = transformers' column `theirs`.
- Overrides: dropout, scan_layers, remat are accepted (same function); d_model / num_heads are
  refused naming them; a classification head the checkpoint lacks is freshly initialised.
- A jaxformer workdir as init_from: its checkpoint's params, bit for bit.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from support.finetune_models import (
    corpus,
    lm_settings,
    peft_adapter,
    tiny_bart,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_roberta,
    write_experiment,
)

from jaxformer import experiment, models
from jaxformer.errors import ConfigError
from jaxformer.hf import finetune
from jaxformer.train.checkpoint import restore_params
from jaxformer.train.loop import model_config_for, train_and_evaluate

TEXTS = ["the king is here now", "good night sweet lady", "what shall my lord say"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"gpt2": tiny_gpt2(root / "gpt2"), "llama": tiny_llama(root / "llama"), "bert": tiny_bert(root / "bert")}


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("\n".join(corpus(200, seed=1)) + "\n", encoding="utf-8")
    return path


def prepared(tmp_path, settings, *overrides):
    file = write_experiment(tmp_path / "exp.py", settings)
    return finetune.prepare(experiment.validate(experiment.load(file, overrides)))


def padded(tokenizer, texts):
    """ours ids [B, T] (0-padded) and valid [B, T] for `texts`."""
    rows = [tokenizer.encode(t) for t in texts]
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, ids != 0


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_imported_decoder_matches_transformers_on_remapped_ids(checkpoints, train_file, tmp_path, name):
    import torch
    import transformers

    exp, start, tokenizer = prepared(tmp_path, lm_settings(str(checkpoints[name]), train_file))
    assert tokenizer is not None and exp.data.tokenizer == "hf"
    config = model_config_for(exp, tokenizer.vocab_size)
    params = start.params(config)
    ours, valid = padded(tokenizer, TEXTS)
    logits = np.asarray(models.build(config).apply({"params": params}, jnp.asarray(ours), valid=jnp.asarray(valid)))
    theirs = np.where(valid, ours - 3, 0)  # no special tokens in TEXTS: theirs = ours - 3
    reference = transformers.AutoModelForCausalLM.from_pretrained(checkpoints[name]).eval()
    with torch.no_grad():
        want = reference(torch.tensor(theirs), attention_mask=torch.tensor(valid.astype(np.int64))).logits.numpy()
    assert logits.shape[-1] == want.shape[-1] + 3
    np.testing.assert_allclose(logits[..., 3:][valid], want[valid], atol=1e-5, rtol=1e-5)
    # reserved ids take the checkpoint's special rows: eos (ours 2) is the checkpoint's </s> / <|endoftext|>
    eos_name = "<|endoftext|>" if name == "gpt2" else "</s>"
    theirs_eos = tokenizer.impl.token_to_id(eos_name)
    np.testing.assert_allclose(logits[..., 2][valid], want[..., theirs_eos][valid], atol=1e-5, rtol=1e-5)


def test_imported_bert_hidden_states_match_transformers_and_new_head_is_named(checkpoints, tmp_path, capsys):
    import torch
    import transformers

    settings = {
        "model.init_from": str(checkpoints["bert"]),
        "data.source": "synthetic",
        "data.task": "classification",
        "data.synthetic_task": "majority",
        "data.max_length": 24,
    }
    exp, start, tokenizer = prepared(tmp_path, settings)
    config = model_config_for(exp, tokenizer.vocab_size, num_classes=3)
    params = start.params(config)
    assert "init_from: freshly initialised [classifier/" in capsys.readouterr().out
    ours, valid = padded(tokenizer, TEXTS)
    out = models.build(config).apply({"params": params}, jnp.asarray(ours), valid=jnp.asarray(valid))
    assert out["logits"].shape == (3, 3)
    theirs = np.where(valid, ours - 3, 0)
    reference = transformers.BertModel.from_pretrained(checkpoints["bert"]).eval()
    with torch.no_grad():
        want = reference(torch.tensor(theirs), attention_mask=torch.tensor(valid.astype(np.int64)))
    got = np.asarray(out["hidden"])
    np.testing.assert_allclose(got[valid], want.last_hidden_state.numpy()[valid], atol=1e-5, rtol=1e-5)


def test_layout_overrides_are_accepted_and_give_the_same_function(checkpoints, train_file, tmp_path):
    base, start, tokenizer = prepared(tmp_path, lm_settings(str(checkpoints["gpt2"]), train_file))
    other, other_start, _ = prepared(
        tmp_path,
        lm_settings(str(checkpoints["gpt2"]), train_file),
        "model.scan_layers=True",
        "model.remat_policy=full",
        "model.dropout_rate=0.1",
    )
    assert other.model == base.model.replace(scan_layers=True, remat_policy="full", dropout_rate=0.1)
    ours, valid = padded(tokenizer, TEXTS)
    outputs = []
    for exp, source in ((base, start), (other, other_start)):
        config = model_config_for(exp, tokenizer.vocab_size)
        logits = models.build(config).apply({"params": source.params(config)}, jnp.asarray(ours), valid=valid)
        outputs.append(np.asarray(logits))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


def test_shape_changing_overrides_are_refused_by_name(checkpoints, train_file, tmp_path):
    settings = lm_settings(str(checkpoints["gpt2"]), train_file)
    with pytest.raises(ConfigError) as info:
        prepared(tmp_path, settings, "model.d_model=48", "model.num_heads=3", "model.dropout_rate=0.1")
    message = str(info.value)
    assert "model.d_model=48" in message and "(checkpoint: 30)" in message
    assert "dropout_rate" not in message and "\n" not in message


def test_workdir_init_from_takes_its_checkpoint_params(checkpoints, train_file, tmp_path):
    first = tmp_path / "first"
    exp, start, tokenizer = prepared(tmp_path, lm_settings(str(checkpoints["gpt2"]), train_file, steps=2))
    train_and_evaluate(exp, first, start, tokenizer)
    exp2, start2, tokenizer2 = prepared(
        tmp_path, {**lm_settings(str(first), train_file), "model.init_from": str(first)}
    )
    assert tokenizer2.vocab_size == tokenizer.vocab_size and exp2.data.tokenizer == "hf"
    saved, saved_config = restore_params(first)
    assert dataclasses.replace(exp2.model) == saved_config
    imported = start2.params(model_config_for(exp2, tokenizer2.vocab_size))
    flat_saved = {k: np.asarray(v) for k, v in finetune.convert.flat_params(saved).items()}
    flat_imported = finetune.convert.flat_params(imported)
    assert set(flat_saved) == set(flat_imported)
    for key, value in flat_saved.items():
        np.testing.assert_array_equal(flat_imported[key], value)


def test_peft_adapter_as_init_adapter_gives_the_peft_models_logits(checkpoints, train_file, tmp_path):
    import peft
    import torch
    import transformers

    from jaxformer.models import lora as lora_lib

    adapter = peft_adapter(checkpoints["llama"], tmp_path / "adapter", ["q_proj", "v_proj", "down_proj"])
    settings = {**lm_settings(str(checkpoints["llama"]), train_file), "lora.init_adapter": str(adapter)}
    exp, start, tokenizer = prepared(tmp_path, settings)
    assert (exp.lora.rank, exp.lora.alpha) == (3, 5.0) and start.adapters is not None
    config = model_config_for(exp, tokenizer.vocab_size)
    merged = lora_lib.merge(start.params(config), start.adapters, exp.lora)
    ours, valid = padded(tokenizer, TEXTS)
    logits = np.asarray(models.build(config).apply({"params": merged}, jnp.asarray(ours), valid=jnp.asarray(valid)))
    base = transformers.AutoModelForCausalLM.from_pretrained(checkpoints["llama"]).eval()
    model = peft.PeftModel.from_pretrained(base, adapter).eval()
    theirs, mask = torch.tensor(np.where(valid, ours - 3, 0)), torch.tensor(valid.astype(np.int64))
    with torch.no_grad():
        want = model(theirs, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(logits[..., 3:][valid], want[valid], atol=1e-5, rtol=1e-5)


def test_full_fine_tune_exports_to_hf_in_the_checkpoints_vocabulary_order(checkpoints, train_file, tmp_path):
    import torch
    import transformers

    from jaxformer.hf import run_export

    workdir = tmp_path / "run"
    exp, start, tokenizer = prepared(tmp_path, lm_settings(str(checkpoints["gpt2"]), train_file, steps=2))
    train_and_evaluate(exp, workdir, start, tokenizer)
    out, step = run_export.export_hf(workdir, tmp_path / "hf")
    assert step == 2 and (out / "tokenizer.json").is_file()
    params, config = restore_params(workdir)
    ours, valid = padded(tokenizer, TEXTS)
    logits = np.asarray(models.build(config).apply({"params": params}, jnp.asarray(ours), valid=jnp.asarray(valid)))
    exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    original = transformers.AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"]).eval()
    theirs, mask = torch.tensor(np.where(valid, ours - 3, 0)), torch.tensor(valid.astype(np.int64))
    with torch.no_grad():
        want = exported(theirs, attention_mask=mask).logits.numpy()
        before = original(theirs, attention_mask=mask).logits.numpy()
    assert want.shape[-1] == before.shape[-1] == 301  # the checkpoint's own vocabulary again
    # column theirs = our column to_ours[theirs] (the special <|endoftext|> is our eos, id 2, trained as such)
    np.testing.assert_allclose(logits[..., tokenizer.to_ours][valid], want[valid], atol=1e-5, rtol=1e-5)
    assert np.abs(want - before)[valid].max() > 1e-3  # two training steps changed the weights


@pytest.mark.slow  # ~23 s; the BART test beside it covers the same pad-id-1 re-indexing by default
def test_roberta_padding_with_id_1_imports_on_reindexed_ids_and_exports_back(tmp_path):
    """RoBERTa pads with id 1 and counts positions from it: re-indexed (pad 0) the masks follow the pad and
    the positions stay (padding_position=1), so the import gives transformers' hidden states, and the
    exported config.json pads with 1 again."""
    import json

    import torch
    import transformers

    from jaxformer.hf import run_export

    directory = tiny_roberta(tmp_path / "roberta")
    settings = {
        "model.init_from": str(directory),
        "data.source": "synthetic",
        "data.task": "classification",
        "data.synthetic_task": "majority",
        "data.max_length": 24,
        "train.steps": 1,
        "train.batch_size": 4,
        "train.eval_every": 0,
        "train.num_samples": 0,
        "train.progress": False,
        "checkpoint.every": 1,
    }
    exp, start, tokenizer = prepared(tmp_path, settings)
    assert exp.model.pad_token_id == 0 and exp.model.padding_position == 1
    config = model_config_for(exp, tokenizer.vocab_size, num_classes=3)
    params = start.params(config)
    ours, valid = padded(tokenizer, TEXTS)
    out = models.build(config).apply({"params": params}, jnp.asarray(ours), valid=jnp.asarray(valid))
    theirs = np.where(valid, ours - 3, 1)  # transformers pads with its own pad id, 1
    reference = transformers.RobertaModel.from_pretrained(directory).eval()
    mask = torch.tensor(valid.astype(np.int64))
    with torch.no_grad():
        want = reference(torch.tensor(theirs), attention_mask=mask).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(out["hidden"])[valid], want[valid], atol=1e-5, rtol=1e-5)
    # Positions counted from the new pad id (0) instead of the padding position would give other states.
    shifted = models.build(config.replace(padding_position=None)).apply({"params": params}, jnp.asarray(ours))
    assert np.abs(np.asarray(shifted["hidden"]) - np.asarray(out["hidden"]))[valid].max() > 1e-3

    workdir = tmp_path / "run"
    train_and_evaluate(exp, workdir, start, tokenizer)
    exported, _ = run_export.export_hf(workdir, tmp_path / "hf")
    written = json.loads((exported / "config.json").read_text())
    assert written["pad_token_id"] == 1 and written["vocab_size"] == reference.config.vocab_size
    again = transformers.AutoModel.from_pretrained(exported).eval()
    params_after, config_after = restore_params(workdir)
    assert config_after.padding_position == 1
    after = models.build(config_after).apply({"params": params_after}, jnp.asarray(ours), valid=jnp.asarray(valid))
    with torch.no_grad():
        got = again(torch.tensor(theirs), attention_mask=mask).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(after["hidden"])[valid], got[valid], atol=1e-5, rtol=1e-5)


def test_bart_padding_with_id_1_imports_on_reindexed_ids(tmp_path):
    """BART (pad 1, bos 0, eos 2) for a seq2seq run with its own tokenizer: on re-indexed ids the imported
    model gives transformers' logits, the vocabulary columns re-ordered alike."""
    import torch
    import transformers

    directory = tiny_bart(tmp_path / "bart")
    settings = {
        "model.init_from": str(directory),
        "data.source": "synthetic",
        "data.task": "seq2seq",
        "data.synthetic_task": "reverse",
        "data.max_length": 24,
    }
    exp, start, tokenizer = prepared(tmp_path, settings)
    assert exp.model.pad_token_id == 0 and exp.model.family == "encoder_decoder"
    config = model_config_for(exp, tokenizer.vocab_size)
    params = start.params(config)
    source, source_valid = padded(tokenizer, TEXTS)
    target, _ = padded(tokenizer, ["good night", "the king is", "my lord"])
    target = np.concatenate([np.full((3, 1), tokenizer.eos_id, np.int32), target], axis=1)  # BART's start: eos
    logits = np.asarray(
        models.build(config).apply(
            {"params": params}, jnp.asarray(source), jnp.asarray(target), source_valid=jnp.asarray(source_valid)
        )
    )
    to_theirs = np.full(tokenizer.vocab_size, -1)
    to_theirs[tokenizer.to_ours] = np.arange(len(tokenizer.to_ours))
    theirs_source = np.where(source_valid, to_theirs[source], 1)
    theirs_target = to_theirs[target]
    reference = transformers.BartForConditionalGeneration.from_pretrained(directory).eval()
    with torch.no_grad():
        want = reference(
            input_ids=torch.tensor(theirs_source),
            attention_mask=torch.tensor(source_valid.astype(np.int64)),
            decoder_input_ids=torch.tensor(np.where(theirs_target < 0, 1, theirs_target)),
        ).logits.numpy()
    real = np.concatenate([np.ones((3, 1), bool), target[:, 1:] != 0], axis=1)  # decoder positions before padding
    np.testing.assert_allclose(logits[..., tokenizer.to_ours][real], want[real], atol=1e-5, rtol=1e-5)
