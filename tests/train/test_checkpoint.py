"""Checkpointer unit tests: round trip, async saving, retention, damage, model mismatch, params-only restore."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer import presets
from jaxformer.config import CheckpointConfig
from jaxformer.train import checkpoint as ck
from jaxformer.train import integrity
from jaxformer.train.preemption import Preempted, PreemptionGuard
from jaxformer.train.state import init_state

TX = optax.adamw(1e-3)


def make_state(preset: str = "tiny-gpt2", seed: int = 0, **overrides):
    config = presets.get(preset, **overrides)
    return config, init_state(config, TX, jax.random.PRNGKey(seed))


def abstract_of(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def host_copy(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


class Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def save_steps(workdir, state, config, steps, **kwargs):
    checkpointer = ck.Checkpointer(workdir, CheckpointConfig(**kwargs), warn=Warnings())
    for step in steps:
        checkpointer.save(step, state.replace(step=jnp.int32(step)), {"position": step}, {"model": config.to_dict()})
    checkpointer.close()


def largest_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def test_round_trip_is_bit_exact(tmp_path):
    config, state = make_state()
    checkpointer = ck.Checkpointer(tmp_path, CheckpointConfig(keep=2))
    assert checkpointer.save(7, state, {"epoch": 1, "offset": 42}, {"model": config.to_dict()})
    checkpointer.wait()
    assert checkpointer.latest_step() == 7
    assert integrity.verify(checkpointer.step_path(7)) is None
    restored = checkpointer.restore(7, abstract_of(state))
    checkpointer.close()
    assert type(restored.state) is type(state)
    assert_trees_equal(restored.state, state)
    assert restored.data_state == {"epoch": 1, "offset": 42}
    assert restored.config["model"] == config.to_dict()


def test_save_is_asynchronous_and_survives_buffer_donation(tmp_path):
    """save() returns while the background write is held back; the state is then overwritten in place
    (a donated jit update), and the checkpoint still holds the values at save time."""
    release = threading.Event()

    class HeldCheckpointer(ck.Checkpointer):
        def _seal_pending(self):
            assert release.wait(timeout=60)
            super()._seal_pending()

    config, state = make_state()
    expected = host_copy(state)
    checkpointer = HeldCheckpointer(tmp_path, CheckpointConfig(keep=2))
    checkpointer.save(1, state, {}, {"model": config.to_dict()})
    assert checkpointer.manager.is_saving_in_progress()
    assert not checkpointer.step_path(1).exists()  # not yet renamed into place: still being written
    bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=(0,))
    state = bump(state)  # training goes on, reusing the saved buffers
    jax.block_until_ready(state)
    release.set()
    checkpointer.wait()
    restored = checkpointer.restore(1, abstract_of(state))
    checkpointer.close()
    assert_trees_equal(restored.state, expected)


def test_synchronous_save_is_sealed_when_it_returns(tmp_path):
    _config, state = make_state()
    checkpointer = ck.Checkpointer(tmp_path, CheckpointConfig(async_save=False))
    checkpointer.save(2, state, {}, {})
    assert not checkpointer.manager.is_saving_in_progress()
    assert integrity.verify(checkpointer.step_path(2)) is None
    checkpointer.close()


def test_keeps_last_k_plus_best(tmp_path):
    _config, state = make_state()
    checkpointer = ck.Checkpointer(tmp_path, CheckpointConfig(keep=2, keep_best="eval_loss"))
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 6.0, 6: 7.0}
    for step, loss in losses.items():
        checkpointer.save(step, state, {}, {}, metrics={"eval_loss": loss})
    checkpointer.wait()
    assert checkpointer.all_steps() == [2, 5, 6]
    assert checkpointer.best_step() == 2
    checkpointer.close()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 5, 6]
    assert not any((tmp_path / "checkpoints" / ck.DELETING_DIRNAME).iterdir())  # retired steps removed


def test_keep_best_max_mode_for_accuracy(tmp_path):
    _config, state = make_state()
    checkpointer = ck.Checkpointer(tmp_path, CheckpointConfig(keep=1, keep_best="eval_accuracy"))
    for step, accuracy in {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.1}.items():
        checkpointer.save(step, state, {}, {}, metrics={"eval_accuracy": accuracy})
    checkpointer.close()
    assert checkpointer.all_steps() == [2, 4]


def test_saving_an_existing_step_is_a_no_op(tmp_path):
    _config, state = make_state()
    checkpointer = ck.Checkpointer(tmp_path)
    assert checkpointer.save(3, state, {}, {})
    assert not checkpointer.save(3, state, {}, {}, force=True)
    checkpointer.close()


def damage(step_dir: Path, how: str) -> None:
    target = largest_file(step_dir)
    if how == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif how == "deleted":
        target.unlink()
    elif how == "garbled":
        data = bytearray(target.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        target.write_bytes(bytes(data))
    elif how == "unsealed":
        (step_dir / integrity.MANIFEST_NAME).unlink()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        pytest.param("deleted", marks=pytest.mark.slow),
        "garbled",
        pytest.param("unsealed", marks=pytest.mark.slow),
    ],
)  # by default one damaged-bytes and one damaged-file case; all four in the slow suite
def test_damaged_latest_falls_back_to_previous(tmp_path, how):
    config, state = make_state()
    save_steps(tmp_path, state, config, [10, 20])
    damage(tmp_path / "checkpoints" / "20", how)
    warnings = Warnings()
    checkpointer = ck.Checkpointer(tmp_path, warn=warnings)
    restored = checkpointer.restore_latest(abstract_of(state))
    assert restored is not None and restored.step == 10 and int(restored.state.step) == 10
    assert restored.data_state == {"position": 10}
    assert any("step 20" in w and "damaged" in w for w in warnings), warnings
    assert (tmp_path / ck.CORRUPT_DIRNAME / "20").is_dir()  # moved aside, not deleted
    # Training goes on and saves step 20 again without colliding with the damaged one.
    assert checkpointer.save(20, state, {"position": 20}, {})
    checkpointer.close()
    assert ck.Checkpointer(tmp_path).restore_latest(abstract_of(state)).step == 20


def test_garbled_bytes_change_the_checksum_only(tmp_path):
    """The garbling keeps the file size: only the manifest's hash can tell."""
    config, state = make_state()
    save_steps(tmp_path, state, config, [5])
    step_dir = tmp_path / "checkpoints" / "5"
    size = largest_file(step_dir).stat().st_size
    damage(step_dir, "garbled")
    assert largest_file(step_dir).stat().st_size == size
    assert "checksum mismatch" in integrity.verify(step_dir)


def test_unreadable_metrics_file_does_not_stop_the_manager(tmp_path):
    config, state = make_state()
    save_steps(tmp_path, state, config, [1], keep_best="eval_loss")
    checkpointer = ck.Checkpointer(tmp_path, CheckpointConfig(keep_best="eval_loss"), warn=Warnings())
    checkpointer.save(2, state, {}, {}, metrics={"eval_loss": 1.0})
    checkpointer.close()
    (tmp_path / "checkpoints" / "2" / "metrics" / "metrics").write_bytes(b"\x00{garbage")
    warnings = Warnings()
    checkpointer = ck.Checkpointer(tmp_path, CheckpointConfig(keep_best="eval_loss"), warn=warnings)
    assert checkpointer.restore_latest(abstract_of(state)).step == 1
    checkpointer.close()
    assert any("metrics" in w for w in warnings)


def test_no_good_checkpoint_left_raises_one_clear_error(tmp_path):
    config, state = make_state()
    save_steps(tmp_path, state, config, [10, 20])
    damage(tmp_path / "checkpoints" / "10", "garbled")
    damage(tmp_path / "checkpoints" / "20", "truncated")
    checkpointer = ck.Checkpointer(tmp_path, warn=Warnings())
    with pytest.raises(ck.CheckpointCorruptError) as info:
        checkpointer.restore_latest(abstract_of(state))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "[10, 20]" in message and "start_fresh_if_corrupt" in message and "\n" not in message
    assert checkpointer.all_steps() == [10, 20]  # nothing moved when stopping
    checkpointer.close()


def test_no_good_checkpoint_left_starts_fresh_when_asked(tmp_path):
    config, state = make_state()
    save_steps(tmp_path, state, config, [10])
    damage(tmp_path / "checkpoints" / "10", "deleted")
    warnings = Warnings()
    checkpointer = ck.Checkpointer(tmp_path, warn=warnings)
    assert checkpointer.restore_latest(abstract_of(state), start_fresh_if_corrupt=True) is None
    assert checkpointer.all_steps() == []
    assert any("from scratch" in w for w in warnings)
    assert checkpointer.save(10, state, {}, {})  # no collision with the damaged step
    checkpointer.close()


def test_leftover_partial_save_is_ignored_and_cleaned(tmp_path):
    """A run killed mid-write leaves `<step>.orbax-checkpoint-tmp*`; it is never offered for restore."""
    config, state = make_state()
    save_steps(tmp_path, state, config, [10])
    partial = tmp_path / "checkpoints" / "20.orbax-checkpoint-tmp"
    shutil.copytree(tmp_path / "checkpoints" / "10", partial)
    checkpointer = ck.Checkpointer(tmp_path)
    assert checkpointer.all_steps() == [10]
    assert checkpointer.restore_latest(abstract_of(state)).step == 10
    checkpointer.save(20, state, {}, {})
    checkpointer.close()
    assert not partial.exists()
    assert checkpointer.all_steps() == [10, 20]


@pytest.mark.slow  # ~15 s; test_param_differences_names_path_and_both_shapes checks the message by default
def test_different_model_lists_paths_and_shapes(tmp_path):
    config, state = make_state("tiny-gpt2")
    save_steps(tmp_path, state, config, [4])
    other_config, other = make_state("tiny-gpt2", d_model=config.d_model + 8, num_layers=config.num_layers + 1)
    checkpointer = ck.Checkpointer(tmp_path)
    with pytest.raises(ck.CheckpointMismatchError) as info:
        checkpointer.restore_latest(abstract_of(other))
    checkpointer.close()
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    expected = ck.param_differences(state.params, other.params)
    assert expected and f"{len(expected)} parameter(s) differ" in message
    for line in expected[: ck._MAX_LISTED]:
        assert line in message
    # Concretely: a kernel whose shape changed with d_model, and a layer the checkpoint lacks.
    d, d2 = config.d_model, other_config.d_model
    assert any(f"({d}," in line and f"({d2}," in line for line in expected)
    assert any("checkpoint absent" in line for line in expected)
    assert (tmp_path / "checkpoints" / "4").is_dir()  # a mismatch is not damage: nothing moved


def test_param_differences_names_path_and_both_shapes():
    saved = {"dense": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}}
    model = {"dense": {"kernel": np.zeros((3, 5)), "bias": np.zeros(4)}, "extra": {"scale": np.zeros(2)}}
    assert ck.param_differences(saved, model) == [
        "dense/kernel: checkpoint (3, 4) vs model (3, 5)",
        "extra/scale: checkpoint absent vs model (2,)",
    ]


def test_restore_params_from_workdir_step_dir_and_export(tmp_path):
    config, state = make_state()
    other = state.replace(params=jax.tree.map(lambda x: x * 2, state.params))
    checkpointer = ck.Checkpointer(tmp_path / "run")
    checkpointer.save(3, state, {}, {"model": config.to_dict()})
    checkpointer.save(6, other, {}, {"model": config.to_dict()})
    checkpointer.close()
    params, model_config = ck.restore_params(tmp_path / "run")
    assert model_config == config
    assert_trees_equal(params, other.params)
    params, _ = ck.restore_params(tmp_path / "run", step=3)
    assert_trees_equal(params, state.params)
    params, _ = ck.restore_params(tmp_path / "run" / "checkpoints" / "3")
    assert_trees_equal(params, state.params)
    out, step = ck.export_params(tmp_path / "run", tmp_path / "export")
    assert step == 6 and (out / ck.EXPORT_CONFIG).is_file()
    assert integrity.verify(out / "params") is None
    params, model_config = ck.restore_params(out)
    assert model_config == config
    assert_trees_equal(params, other.params)
    with pytest.raises(ck.CheckpointError, match="not empty"):
        ck.export_params(tmp_path / "run", out)
    with pytest.raises(ck.CheckpointError, match="step 4 not found"):
        ck.restore_params(tmp_path / "run", step=4)
    with pytest.raises(ck.CheckpointError, match="no checkpoint found"):
        ck.restore_params(tmp_path)


def test_preemption_guard_turns_signals_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    guard = PreemptionGuard().install()
    try:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.should_stop(2) and guard.received == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while stopping: give up now
        stop = guard.stopped(2, "/w/checkpoints/2")
        assert isinstance(stop, Preempted) and not isinstance(stop, ValueError)
        assert "after step 2" in str(stop) and "/w/checkpoints/2" in str(stop)
    finally:
        guard.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before
