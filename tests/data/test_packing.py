"""Packing: Multi30k rows are >= 95% real tokens, and a packed row gives every example exactly the loss it
has alone (same parameters), for the encoder-decoder and the decoder-only model."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import models, presets
from jaxformer.data import DataConfig, build_pipeline
from jaxformer.data.iterator import BatchStream, FixedExamples


def multi30k_config(shared_data: Path, **changes) -> DataConfig:
    prefix = str(shared_data / "multi30k")
    values = dict(
        source="parallel",
        task="seq2seq",
        train_path=f"{prefix}/train",
        eval_path=f"{prefix}/val",
        source_suffix=".en",
        target_suffix=".de",
        tokenizer="sentencepiece",
        vocab_size=8000,
        tokenizer_train_examples=10_000,  # SentencePiece samples 10k sentences: fast enough for a test
        max_source_length=128,
        max_target_length=128,
    )
    values.update(changes)
    return DataConfig(**values)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One work directory per module, so the SentencePiece model is trained once and reused."""
    return str(tmp_path_factory.mktemp("packing"))


def non_padding(batches: list[dict[str, np.ndarray]]) -> tuple[float, float, float]:
    """Fractions of real tokens: (source, target, both)."""
    source = np.mean([(b["source"] != 0).mean() for b in batches])
    target = np.mean([b["weights"].mean() for b in batches])
    return float(source), float(target), float((source + target) / 2)


def test_multi30k_packing_fills_rows(shared_data: Path, workdir: str):
    fractions = {}
    for pack in (False, True):
        pipeline = build_pipeline(
            multi30k_config(shared_data, pack=pack), family="encoder_decoder", batch_size=64, seed=0, workdir=workdir
        )
        batches = [b for b, _ in zip(pipeline.train_batches(), range(20), strict=False)]
        fractions[pack] = non_padding(batches)
        pipeline.close()
    print(
        f"\nMulti30k non-padding fraction (source, target, both): unpacked {fractions[False]}, packed {fractions[True]}"
    )
    assert fractions[True][2] >= 0.95 and fractions[True][2] > fractions[False][2]
    assert min(fractions[True][:2]) >= 0.9


def init_and_apply(preset: str, vocab_size: int, seed: int):
    """Random parameters of the preset's shapes and a jitted apply. (Any parameters serve the equivalence;
    drawing them with NumPy avoids compiling the initialisers, which is slow on a loaded CPU.)"""
    config = presets.get(preset, vocab_size=vocab_size)
    model = models.build(config)
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(models.abstract_params(config))
    params = jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype), shapes)
    return params, jax.jit(lambda params, *args, **kwargs: model.apply({"params": params}, *args, **kwargs))


def segment_token_losses(logits: jax.Array, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-token cross-entropy [B, T] (0 where weights are 0), float64 on the host."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.asarray(targets)[..., None], axis=-1)[..., 0]
    return -np.asarray(picked, np.float64) * weights


def per_segment(values: np.ndarray, segment_ids: np.ndarray) -> list[float]:
    """Sums of `values` over each (row, segment) in row-major order."""
    out = []
    for row, segments in zip(values, segment_ids, strict=True):
        out += [float(row[segments == s].sum()) for s in range(1, int(segments.max()) + 1)]
    return out


def test_packed_loss_equals_unpacked_encoder_decoder(shared_data: Path, workdir: str):
    config = multi30k_config(shared_data, pack=True, max_source_length=64, max_target_length=64)
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=4, seed=0, workdir=workdir)
    packed = next(pipeline.train_batches())
    pipeline.close()
    params, apply = init_and_apply("tiny-transformer", pipeline.vocab_size, seed=0)
    logits = apply(
        params,
        packed["source"],
        packed["target_in"],
        source_valid=packed["source_segment_ids"] > 0,
        target_valid=packed["target_segment_ids"] > 0,
        source_positions=packed["source_positions"],
        target_positions=packed["target_positions"],
        source_segment_ids=packed["source_segment_ids"],
        target_segment_ids=packed["target_segment_ids"],
    )
    packed_losses = per_segment(
        segment_token_losses(logits, packed["targets"], packed["weights"]), packed["target_segment_ids"]
    )
    assert len(packed_losses) >= 12  # several examples per row

    # The same examples one per row (padded, no segment ids), then each exactly alone (no padding at all).
    sources, targets_in, targets = [], [], []
    for r in range(packed["source"].shape[0]):
        for s in range(1, int(packed["source_segment_ids"][r].max()) + 1):
            sources.append(packed["source"][r][packed["source_segment_ids"][r] == s])
            targets_in.append(packed["target_in"][r][packed["target_segment_ids"][r] == s])
            targets.append(packed["targets"][r][packed["target_segment_ids"][r] == s])
    width = packed["source"].shape[1]

    def pad(rows: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.pad(row, (0, width - len(row))) for row in rows]).astype(np.int32)

    source, target_in, target = pad(sources), pad(targets_in), pad(targets)
    unpacked_logits = apply(params, source, target_in, source_valid=source != 0)
    unpacked = segment_token_losses(unpacked_logits, target, (target != 0).astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(packed_losses, unpacked, rtol=1e-5, atol=1e-5)
    alone = apply(params, sources[0][None], targets_in[0][None])  # no padding at all
    loss = segment_token_losses(alone, targets[0][None], np.ones((1, len(targets[0])))).sum()
    np.testing.assert_allclose(packed_losses[0], loss, rtol=1e-5, atol=1e-5)


def test_packed_loss_equals_unpacked_decoder_only(shared_data: Path, tmp_path: Path):
    import gzip

    with gzip.open(shared_data / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as file:
        lines = file.read().splitlines()[:500]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = DataConfig(
        source="text",
        task="lm",
        train_path=str(tmp_path / "lines.txt"),
        text_unit="line",
        tokenizer="char",
        max_length=64,
        pack=True,
    )
    pipeline = build_pipeline(config, family="decoder_only", batch_size=3, seed=0)
    packed = next(pipeline.train_batches())
    pipeline.close()
    params, apply = init_and_apply("tiny-gpt2", pipeline.vocab_size, seed=1)
    segments = packed["segment_ids"]
    logits = apply(params, packed["tokens"], positions=packed["positions"], segment_ids=segments, valid=segments > 0)
    packed_losses = per_segment(segment_token_losses(logits, packed["targets"], packed["weights"]), segments)
    assert len(packed_losses) >= 4
    # Each example at the start of its own row: causal attention makes the trailing padding invisible.
    width = segments.shape[1]
    tokens = np.zeros((len(packed_losses), width), np.int32)
    targets = np.zeros_like(tokens)
    k = 0
    for r in range(segments.shape[0]):
        for s in range(1, int(segments[r].max()) + 1):
            real = segments[r] == s
            tokens[k, : real.sum()], targets[k, : real.sum()] = packed["tokens"][r][real], packed["targets"][r][real]
            k += 1
    unpacked = segment_token_losses(apply(params, tokens), targets, (targets != 0) * 1.0).sum(axis=1)  # 0 = padding
    np.testing.assert_allclose(packed_losses, unpacked, rtol=1e-5, atol=1e-5)


def test_packed_batch_layout_matches_a_reference(tmp_path: Path):
    """Segments count from 1, positions restart, target_in is bos + target shifted right, rows hold whole examples."""
    config = DataConfig(
        num_train_examples=200, synthetic_min_length=1, synthetic_max_length=9, max_length=24, pack=True
    )
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=4, seed=0)
    batch = next(pipeline.train_batches())
    pipeline.close()
    train = pipeline.split_examples("train")
    target_of = {tuple(train.inputs[i]): train.targets[i] for i in range(len(train))}
    for r in range(4):
        seg_s, seg_t = batch["source_segment_ids"][r], batch["target_segment_ids"][r]
        count = int(seg_s.max())
        assert count == int(seg_t.max()) and count >= 2
        assert list(np.unique(seg_s[seg_s > 0])) == list(range(1, count + 1))  # contiguous, numbered from 1
        for s in range(1, count + 1):
            source = batch["source"][r][seg_s == s]
            target = batch["targets"][r][seg_t == s]
            np.testing.assert_array_equal(batch["source_positions"][r][seg_s == s], np.arange(len(source)))
            np.testing.assert_array_equal(batch["target_positions"][r][seg_t == s], np.arange(len(target)))
            np.testing.assert_array_equal(batch["target_in"][r][seg_t == s], np.concatenate([[1], target[:-1]]))
            np.testing.assert_array_equal(target_of[tuple(source)], target)
            assert source[-1] == 2 and target[-1] == 2
        np.testing.assert_array_equal(batch["weights"][r], (seg_t > 0).astype(np.float32))


def test_packing_places_every_example_exactly_once_per_epoch():
    pipeline = build_pipeline(
        DataConfig(num_train_examples=300, synthetic_min_length=1, synthetic_max_length=12, max_length=40),
        family="encoder_decoder",
        batch_size=4,
        seed=0,
    )
    stream = BatchStream(
        FixedExamples(pipeline.split_examples("train")),
        "seq2seq",
        "pack",
        4,
        (40, 40),
        seed=5,
        shuffle=True,
        segments=True,
    )
    placed: list[tuple[int, int]] = []
    while len({i for e, i in placed if e == 0}) < 300:
        rows, _ = stream.next_plan()
        placed += [item for row in rows for item in row]
        assert len(stream.pending) < 40
    assert len(placed) == len(set(placed))  # nothing twice
    assert {i for e, i in placed if e == 0} == set(range(300))
