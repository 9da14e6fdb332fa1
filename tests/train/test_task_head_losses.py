"""Fine-tuning hooks of the QA and token-classification heads: the loss is transformers' loss, and it trains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import hf
from jaxformer.config import TrainConfig
from jaxformer.errors import InputError
from jaxformer.train import tasks
from jaxformer.train.optim import make_optimizer
from jaxformer.train.state import TrainState
from jaxformer.train.step import make_eval_step, make_train_step

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, CLASSES, LENGTHS, WIDTH = 53, 4, (11, 8, 5, 11), 11


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_losses")
    config = dict(vocab_size=VOCAB, hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=23)
    config.update(max_position_embeddings=16, initializer_range=0.2, hidden_dropout_prob=0.0)
    config.update(attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    out = {}
    for name, model in (
        ("qa", transformers.BertForQuestionAnswering(transformers.BertConfig(**config))),
        (
            "token_classification",
            transformers.BertForTokenClassification(transformers.BertConfig(**config, num_labels=CLASSES)),
        ),
    ):
        model.eval().save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


def tokens_and_valid(seed: int):
    rng = np.random.default_rng(seed)
    valid = np.arange(WIDTH)[None, :] < np.array(LENGTHS)[:, None]
    return np.where(valid, rng.integers(1, VOCAB, (len(LENGTHS), WIDTH)), 0), valid


def qa_batch(seed: int) -> dict[str, np.ndarray]:
    tokens, _ = tokens_and_valid(seed)
    rng = np.random.default_rng(seed + 1)
    start = np.array([int(rng.integers(0, n)) for n in LENGTHS])
    end = np.minimum(start + rng.integers(0, 3, len(LENGTHS)), np.array(LENGTHS) - 1)
    start[-1] = end[-1] = 99  # past the end on both: ignored, as in transformers
    weights = np.ones(len(LENGTHS), np.float32)
    return {"tokens": tokens, "start_positions": start, "end_positions": end, "weights": weights}


def tagging_batch(seed: int) -> dict[str, np.ndarray]:
    tokens, valid = tokens_and_valid(seed)
    rng = np.random.default_rng(seed + 1)
    labels = np.where(valid, rng.integers(0, CLASSES, tokens.shape), -100)
    labels[0, 0] = labels[1, -3] = -100  # [CLS]-like and sub-word positions
    return {"tokens": tokens, "labels": labels, "weights": valid.astype(np.float32)}


def jaxformer_loss(directory, batch) -> float:
    model, params, config = hf.load(directory)
    sums = jax.jit(make_eval_step(model, config))(params, jax.tree.map(jnp.asarray, batch))
    return float(sums["loss_sum"] / sums["weight_sum"])


def transformers_loss(torch_model, batch, **labels) -> float:
    with torch.no_grad():
        mask = torch.tensor((batch["tokens"] != 0).astype(np.int64))
        out = torch_model(torch.tensor(batch["tokens"]), attention_mask=mask, **labels)
    return float(out.loss)


def test_qa_loss_equals_transformers(tiny):
    directory, torch_model = tiny["qa"]
    batch = qa_batch(0)
    expected = transformers_loss(
        torch_model,
        batch,
        start_positions=torch.tensor(batch["start_positions"]),
        end_positions=torch.tensor(batch["end_positions"]),
    )
    assert abs(jaxformer_loss(directory, batch) - expected) <= 1e-5 * max(1.0, expected)


def test_token_classification_loss_equals_transformers_with_ignored_labels(tiny):
    directory, torch_model = tiny["token_classification"]
    batch = tagging_batch(1)
    expected = transformers_loss(torch_model, batch, labels=torch.tensor(batch["labels"]))
    assert abs(jaxformer_loss(directory, batch) - expected) <= 1e-5 * max(1.0, expected)


def test_ignored_labels_carry_no_weight():
    logits = jnp.zeros((1, 3, CLASSES))
    _, targets, weights = tasks.token_targets(logits, jnp.array([[2, -100, 1]]), jnp.ones((1, 3)))
    np.testing.assert_array_equal(targets, [[2, 0, 1]])
    np.testing.assert_array_equal(weights, [[1.0, 0.0, 1.0]])


def test_qa_batch_without_span_labels_is_one_clear_error(tiny):
    _, _, config = hf.load(tiny["qa"][0])
    with pytest.raises(InputError, match=r"encoder_head='qa' lacks keys \['start_positions', 'end_positions'\]"):
        tasks.check_batch(config, {"tokens": 0, "weights": 0})


@pytest.mark.parametrize("head", ["qa", "token_classification"])
def test_a_few_steps_lower_the_loss(tiny, head):
    model, params, config = hf.load(tiny[head][0])
    train = TrainConfig(steps=20, batch_size=4, learning_rate=3e-3, warmup_steps=0, schedule="constant")
    tx, schedule = make_optimizer(train, config.d_model)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, qa_batch(2) if head == "qa" else tagging_batch(2))
    step = jax.jit(make_train_step(model, config, tx, schedule))
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
