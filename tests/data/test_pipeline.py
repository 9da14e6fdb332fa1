"""The batch stream: exact resume, determinism, per-epoch reshuffle, per-process shares, evaluation batches."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest

from jaxformer.data import DataConfig, DataError, build_pipeline
from jaxformer.data.iterator import BatchStream, FixedExamples

FAMILY = {"seq2seq": "encoder_decoder", "lm": "decoder_only", "classification": "encoder_only"}


def small_config(**changes) -> DataConfig:
    """A finite synthetic seq2seq set of 150 strings of 1..12 digits: a few batches per epoch."""
    values = dict(
        num_train_examples=150, num_eval_examples=37, synthetic_min_length=1, synthetic_max_length=12, max_length=32
    )
    values.update(changes)
    return DataConfig(**values)


def take(iterator, n: int) -> list[dict[str, np.ndarray]]:
    return list(islice(iterator, n))


def assert_same_batches(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(pack=True),
        dict(bucket_by_length=True, bucket_boundaries=(8, 16, 32)),
        dict(prefetch=0, shuffle=False),
    ],
    ids=["plain", "packed", "bucketed", "unshuffled-no-prefetch"],
)
def test_resume_mid_epoch_continues_exactly(changes):
    config = small_config(**changes)
    reference = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=7)
    expected = take(reference.train_batches(), 30)  # several epochs
    reference.close()

    first = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=7)
    iterator = first.train_batches()
    take(iterator, 5)
    state = json.loads(json.dumps(first.get_state()))  # what a checkpoint stores
    first.close()
    assert 0 < state["cursor"] < 150 and state["batches"] == 5  # inside an epoch of 150 examples

    resumed = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=7)
    resumed.set_state(state)
    assert_same_batches(take(resumed.train_batches(), 25), expected[5:])
    resumed.close()


def test_state_of_another_process_is_replayed_exactly():
    """Checkpoints may keep only process 0's state: process 1 replays its own stream to the same step."""
    config = small_config(pack=True)
    process = [
        build_pipeline(config, family="encoder_decoder", batch_size=8, seed=1, process_index=p, process_count=2)
        for p in (0, 1)
    ]
    expected = take(process[1].train_batches(), 9)
    take(process[0].train_batches(), 4)
    state = process[0].get_state()
    fresh = build_pipeline(config, family="encoder_decoder", batch_size=8, seed=1, process_index=1, process_count=2)
    fresh.set_state(state)
    assert_same_batches(take(fresh.train_batches(), 5), expected[4:])
    for pipeline in [*process, fresh]:
        pipeline.close()


def test_train_batches_twice_continues_and_is_deterministic():
    config = small_config()
    a = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=3)
    b = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=3)
    c = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=4)
    first = take(a.train_batches(), 4) + take(a.train_batches(), 4)  # the second call continues
    assert_same_batches(first, take(b.train_batches(), 8))
    assert not np.array_equal(first[0]["source"], take(c.train_batches(), 1)[0]["source"])
    for pipeline in (a, b, c):
        pipeline.close()


def test_each_epoch_is_a_new_permutation_of_all_examples():
    config = small_config(num_train_examples=64, max_length=16, synthetic_max_length=8)
    stream_args = dict(task="seq2seq", mode="plain", rows=16, widths=(16, 16), seed=11, shuffle=True, segments=False)
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=16, seed=11)
    stream = BatchStream(FixedExamples(pipeline.split_examples("train")), **stream_args)
    epochs = [[item for _ in range(4) for row in stream.next_plan()[0] for item in row] for _ in range(2)]
    assert [e for e, _ in epochs[0]] == [0] * 64 and [e for e, _ in epochs[1]] == [1] * 64
    orders = [[i for _, i in epoch] for epoch in epochs]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(64)) and orders[0] != orders[1]
    np.testing.assert_array_equal(orders[1], np.random.default_rng([11, 1]).permutation(64))


def test_processes_get_disjoint_shares_of_the_global_batch():
    config = small_config(shuffle=False)
    single = build_pipeline(config, family="encoder_decoder", batch_size=8, seed=0)
    shares = [
        build_pipeline(config, family="encoder_decoder", batch_size=8, seed=0, process_index=p, process_count=2)
        for p in (0, 1)
    ]
    rows = [take(share.train_batches(), 9) for share in shares]  # 36 of the 75 examples of each process
    assert rows[0][0]["source"].shape == (4, 32)
    seen = [{tuple(r) for b in batches for r in b["source"]} for batches in rows]
    assert not seen[0] & seen[1]
    # Evaluation: the processes' rows of global batch k are the single process's batch k, split in two.
    single_eval = list(single.eval_batches("validation"))
    share_eval = [list(share.eval_batches("validation")) for share in shares]
    assert len(single_eval) == len(share_eval[0]) == len(share_eval[1]) == 5  # ceil(37 / 8)
    for k, batch in enumerate(single_eval):
        for key in batch:
            np.testing.assert_array_equal(batch[key], np.concatenate([share_eval[0][k][key], share_eval[1][k][key]]))
    for pipeline in [single, *shares]:
        pipeline.close()


@pytest.mark.parametrize("task", ["seq2seq", "classification"])
def test_eval_batches_cover_the_split_once_with_zero_weight_padding(task: str):
    changes = dict(task="classification", synthetic_task="majority") if task == "classification" else {}
    pipeline = build_pipeline(small_config(**changes), family=FAMILY[task], batch_size=16, seed=0)
    batches = list(pipeline.eval_batches("validation"))
    examples = pipeline.split_examples("validation")
    assert len(batches) == pipeline.num_eval_batches() == 3  # 37 examples
    if task == "classification":
        assert sum(b["weights"].sum() for b in batches) == 37
        np.testing.assert_array_equal(np.concatenate([b["labels"] for b in batches])[:37], examples.labels)
    else:
        assert sum(b["weights"].sum() for b in batches) == examples.targets.lengths.sum()
    np.testing.assert_array_equal(batches[-1]["weights"][5:], 0.0)
    assert (batches[-1]["tokens" if task == "classification" else "source"][5:] == 0).all()


def test_packed_eval_batches_keep_the_training_keys():
    pipeline = build_pipeline(small_config(pack=True), family="encoder_decoder", batch_size=8, seed=0)
    train_batch = next(pipeline.train_batches())
    eval_batch = next(pipeline.eval_batches())
    pipeline.close()
    assert train_batch.keys() == eval_batch.keys()
    assert eval_batch["source_segment_ids"].max() == 1  # one example per evaluation row


def test_infinite_synthetic_data_changes_every_epoch():
    pipeline = build_pipeline(DataConfig(), family="encoder_decoder", batch_size=500, seed=0)
    batches = take(pipeline.train_batches(), 40)  # 2 epochs of 10,000 generated examples
    pipeline.close()
    first, second = ({tuple(r) for b in part for r in b["source"]} for part in (batches[:20], batches[20:]))
    assert len(first & second) < 0.2 * len(first)
    assert (pipeline.get_state()["epoch"], pipeline.get_state()["cursor"]) == (1, 10_000)


def test_set_state_rejects_a_different_stream():
    pipeline = build_pipeline(small_config(), family="encoder_decoder", batch_size=8, seed=0)
    state = pipeline.get_state()
    with pytest.raises(DataError, match="batch_size=8 but this run has batch_size=16"):
        build_pipeline(small_config(), family="encoder_decoder", batch_size=16, seed=0).set_state(state)
    with pytest.raises(DataError, match=r"data.pack: False -> True"):
        build_pipeline(small_config(pack=True), family="encoder_decoder", batch_size=8, seed=0).set_state(state)


def test_family_task_and_batch_size_are_checked():
    with pytest.raises(DataError, match=r"decoder_only model trains task='lm' but data\.task='seq2seq'"):
        build_pipeline(DataConfig(), family="decoder_only", batch_size=8, seed=0)
    with pytest.raises(DataError, match="multiple of process_count=3"):
        build_pipeline(DataConfig(), family="encoder_decoder", batch_size=8, seed=0, process_count=3)


def test_encode_input_matches_training_rows():
    pipeline = build_pipeline(small_config(shuffle=False), family="encoder_decoder", batch_size=4, seed=0)
    text, _ = pipeline.examples("train", 1)[0]
    row = next(pipeline.train_batches())["source"][0]
    pipeline.close()
    assert pipeline.encode_input(text) == row[row != 0].tolist()


def test_prefetch_does_not_change_the_batches():
    batches = []
    for prefetch in (0, 3):
        pipeline = build_pipeline(
            small_config(pack=True, prefetch=prefetch), family="encoder_decoder", batch_size=8, seed=2
        )
        batches.append(take(pipeline.train_batches(), 12))
        pipeline.close()
    assert_same_batches(*batches)


def test_bucketed_batches_are_padded_to_their_bucket():
    config = small_config(bucket_by_length=True, bucket_boundaries=(6, 10, 32))
    pipeline = build_pipeline(config, family="encoder_decoder", batch_size=8, seed=0)
    widths = set()
    for batch in take(pipeline.train_batches(), 40):
        width = batch["source"].shape[1]
        widths.add(width)
        longest = max((batch["source"] != 0).sum(1).max(), batch["weights"].sum(1).max())
        smaller = [b for b in (6, 10, 32) if b < width]
        assert longest <= width and (not smaller or longest > smaller[-1])  # the tightest bucket
    pipeline.close()
    assert widths == {6, 10, 32}
