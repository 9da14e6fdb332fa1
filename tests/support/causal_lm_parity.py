"""Shared scaffolding of the decoder-LLM parity tests (Llama family, Gemma family): the tiny odd-sized
transformers config every case starts from, the left-padded prompts, and the transformers-side calls
(logits, greedy generate, save -> from_pretrained round trip) that each family file checks against.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

from jaxformer import decoding, hf
from jaxformer.hf import files

# hidden 30 with 6 heads of head_dim 8: H * Dh != D, so a d_model / num_heads assumption shows.
COMMON = dict(
    vocab_size=97,
    hidden_size=30,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
PROMPTS = [[1, 17, 29, 40, 8, 12, 5, 66, 91], [1, 22, 9, 31], [1, 50, 3, 77, 14, 38]]


def random_causal_lm(model_type: str, values: dict, directory, perturb) -> transformers.PreTrainedModel:
    """A transformers causal LM of `model_type` built from COMMON | values, seeded, its parameters
    changed in place by `perturb(name, tensor)` under no_grad, saved to `directory`."""
    config = transformers.AutoConfig.for_model(model_type, **{**COMMON, **values})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            perturb(name, tensor)
    model.save_pretrained(directory)
    return model


def left_padded():
    """(tokens [B, T], valid [B, T], positions [B, T]) of PROMPTS, left-padded."""
    tokens, valid = decoding.pack_prompts(PROMPTS)
    return tokens, valid, decoding.positions_from_valid(valid)


def hf_logits(model, tokens, valid, positions=None) -> np.ndarray:
    args = dict(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid, dtype=torch.long))
    if positions is not None:
        args["position_ids"] = torch.tensor(positions, dtype=torch.long)
    with torch.no_grad():
        return model(**args).logits.numpy()


def hf_greedy(model, tokens, valid, steps: int) -> np.ndarray:
    """transformers.generate greedy, exactly `steps` new tokens, the prompt columns removed."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(valid, dtype=torch.long),
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            pad_token_id=0,
        )
    return out[:, tokens.shape[1] :].numpy()


def assert_save_round_trip(model, directory, out_dir, model_type: str, **save_options):
    """jaxformer.hf.save of the loaded `directory` -> from_pretrained: the same model type, every tensor
    bit-equal, the same file tensors (HF -> jaxformer -> HF), equal logits; returns (config, reloaded config)."""
    _, params, config = hf.load(directory)
    hf.save(config, params, out_dir, **save_options)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    assert reloaded.config.model_type == model_type
    want, got = model.state_dict(), reloaded.state_dict()
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    original, written = files.read_tensors(directory), files.read_tensors(out_dir)
    assert sorted(written) == sorted(original)
    for name, tensor in original.items():
        np.testing.assert_array_equal(written[name], tensor)
    tokens, valid, _ = left_padded()
    np.testing.assert_array_equal(hf_logits(reloaded, tokens, valid), hf_logits(model, tokens, valid))
    _, _, again = hf.load(out_dir)
    return config, again
