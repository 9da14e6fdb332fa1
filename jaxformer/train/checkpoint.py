"""Orbax checkpoints in `<workdir>/checkpoints` that never lose work.

Each step directory holds three items: "state" (params, optimizer state, step, dropout key),
"data" (the input iterator position, JSON) and "config" (the experiment and model, JSON),
plus "metrics" when `keep_best` tracks an eval metric. Saves are asynchronous: `save`
returns once the arrays are copied off the devices, training goes on while a background
thread writes them, seals the directory with a checksum manifest (integrity.py) and
renames it into place, so a finalized step is always complete and verifiable.

Resuming (`restore_latest`) walks back from the newest step: a damaged step (missing,
truncated or garbled file) is reported, moved to `<workdir>/checkpoints_corrupt/` and the
previous one is tried; a step saved by a different model raises `CheckpointMismatchError`
listing the differing parameter paths and shapes. Restores go onto whatever shapes and
shardings the abstract target carries, so a run saved on one device layout resumes on another.

A save that the disk refuses (full, read-only, no permission: `STORAGE_ERRNOS`) is one
`CheckpointStorageError` naming the directory, the bytes a save needs and the bytes free; the
half-written step is removed, the previous steps are untouched, and Orbax's own logged tracebacks
for that failure (and the "event loop is closed" noise of its cancelled writes) are held back.

`restore_params(path)` loads parameters alone (inference, fine-tuning) from a workdir, a
checkpoints directory, one step directory or an export; `export_params` writes an export:
`<out>/params` (Orbax, sealed) + `<out>/model_config.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from jaxformer.config import CheckpointConfig, ModelConfig
from jaxformer.errors import CheckpointError, CheckpointNotFoundError, format_bytes, free_bytes
from jaxformer.models import finite
from jaxformer.train import integrity
from jaxformer.train.storage import CheckpointStorageError, dir_bytes, quiet_storage_noise, storage_errno

ITEMS = ("state", "data", "config")
CORRUPT_DIRNAME = "checkpoints_corrupt"
DELETING_DIRNAME = ".deleting"  # old steps are renamed here (atomic), then removed: never a half-deleted step
EXPORT_CONFIG = "model_config.json"
_MAX_LISTED = 12


class CheckpointCorruptError(CheckpointError):
    """A checkpoint step whose files are missing, truncated or garbled (or no readable step at all)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint saved by a different model (parameter paths or shapes differ)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    step: int
    state: Any  # the TrainState, placed like the abstract target
    data_state: Any  # the pipeline's get_state() at that step
    config: dict[str, Any]  # {"experiment": ..., "model": ...} as saved


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _preservation(config: CheckpointConfig) -> tuple[Any, Callable[[Any], float] | None, str]:
    """Keep the latest `config.keep` steps, plus the best one by `config.keep_best` when set."""
    best_metric = config.keep_best
    kept: list[Any] = [policies.LatestN(n=config.keep)]
    best_fn = None
    mode = "min" if best_metric.endswith(("loss", "perplexity")) else "max"
    if best_metric:
        best_fn = lambda metrics: float(metrics[best_metric])  # noqa: E731
        kept.append(
            policies.BestN(get_metric_fn=best_fn, reverse=mode == "min", n=1, keep_checkpoints_without_metrics=False)
        )
    return policies.AnyPreservationPolicy(kept), best_fn, mode


class Checkpointer:
    """Saves (async by default), keeps the last `config.keep` (+ the best by `config.keep_best`), restores the
    latest good step. `config`: the run's `CheckpointConfig` (its `every` and `start_fresh_if_corrupt` are the
    loop's business)."""

    def __init__(
        self,
        workdir: str | Path,
        config: CheckpointConfig | None = None,
        *,
        warn: Callable[[str], None] = _warn,
    ):
        config = config or CheckpointConfig()
        self.workdir = Path(workdir).resolve()
        self.directory = self.workdir / "checkpoints"
        self.config = config
        self._warn = warn
        self._pending_step: int | None = None
        self._pending_bytes = 0  # the state's array bytes of the save in flight
        self._failure: CheckpointStorageError | None = None
        self._noise = quiet_storage_noise()
        self._warned_missing_metric = False
        self._set_aside_unreadable_metrics()
        self._purge_deleted()
        if jax.process_count() > 1:  # the others open the directory only once process 0 has tidied it
            multihost_utils.sync_global_devices("jaxformer_checkpointer_open")
        preservation, best_fn, mode = _preservation(config)
        options = ocp.CheckpointManagerOptions(
            create=True,
            cleanup_tmp_directories=True,  # half-written steps of a killed run
            todelete_subdir=DELETING_DIRNAME,
            enable_async_checkpointing=True,  # async_save=False waits after each save instead
            async_options=ocp.AsyncOptions(post_finalization_callback=self._seal_pending),
            best_fn=best_fn,
            best_mode=mode,
            preservation_policy=preservation,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        # Orbax removes leftover temporary steps in a thread; finish it now, so a run that stops before
        # close() (an error writing its run files) has no thread failing at interpreter shutdown.
        cleanup = getattr(self.manager, "_cleanup_tmp_directory_future", None)
        if cleanup is not None:
            cleanup.result()

    def _set_aside_unreadable_metrics(self) -> None:
        """Orbax parses every step's metrics when it opens the directory; a garbled file would stop it there.

        Renaming the file leaves the step failing its manifest check, so `restore_latest` reports it like any
        other damage instead of the manager refusing to open.
        """
        if jax.process_index() != 0 or not self.directory.is_dir():
            return
        for metrics_file in self.directory.glob("*/metrics/metrics"):
            try:
                json.loads(metrics_file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                metrics_file.rename(metrics_file.with_name("metrics.unreadable"))
                self._warn(f"the metrics file {metrics_file} is unreadable; that checkpoint counts as damaged.")

    def _purge_deleted(self) -> None:
        """Remove the steps Orbax retired into DELETING_DIRNAME (a kill mid-way leaves only that folder partial)."""
        if jax.process_index() != 0:
            return
        for retired in sorted((self.directory / DELETING_DIRNAME).glob("*")):
            shutil.rmtree(retired, ignore_errors=True)

    # Saving -----------------------------------------------------------------

    def _seal_pending(self) -> None:
        """Runs in Orbax's background thread after the items are written, before the rename into place."""
        step = self._pending_step
        if step is None:
            return
        staged = sorted(self.directory.glob(f"{step}.orbax-checkpoint-tmp*"))
        target = staged[-1] if staged else self.step_path(step)
        if not target.is_dir():
            raise RuntimeError(f"cannot find the directory of checkpoint step {step} to seal in {self.directory}")
        integrity.seal(target)
        self._purge_deleted()  # steps retired by the previous save, removed off the training thread

    def save(
        self,
        step: int,
        state: Any,
        data_state: Any,
        config: dict[str, Any],
        metrics: dict[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Start saving `step` (returns once the arrays are off the devices); False if `step` is already saved.

        Raises CheckpointStorageError when the disk refuses this save or the one still in flight.
        """
        self.wait()  # one save at a time; Orbax would wait here anyway
        if step in self.manager.all_steps():
            return False
        if metrics is not None and self.config.keep_best and self.config.keep_best not in metrics:
            if not self._warned_missing_metric:
                self._warn(
                    f"checkpoint.keep_best={self.config.keep_best!r} is not among the eval metrics "
                    f"({', '.join(sorted(metrics))}); only the latest checkpoints are kept."
                )
                self._warned_missing_metric = True
            metrics = None
        self._pending_step = step
        self._pending_bytes = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(state))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        )
        with self._storage_guard():
            self._probe_writable(step)  # a refused directory before Orbax starts its threads (they would wait 300 s)
            saved = bool(
                self.manager.save(step, args=args, metrics=metrics if self.config.keep_best else None, force=force)
            )
        if not self.config.async_save:
            self.wait()
        return saved

    def wait(self) -> None:
        """Block until the save in flight is on disk, sealed and renamed into place."""
        with self._storage_guard():
            self.manager.wait_until_finished()
        self._noise.settle(failed=False)

    def close(self) -> None:
        if self._failure is not None:  # already reported: close quietly, the same refusal would come again
            with contextlib.suppress(Exception):
                self.manager.close()
            return
        self.wait()
        with self._storage_guard():
            self.manager.close()
        self._purge_deleted()

    def _probe_writable(self, step: int) -> None:
        """Create and remove an empty directory where the step will go: read-only / no permission fails here."""
        probe = self.directory / f".probe-{step}-{jax.process_index()}"
        self.directory.mkdir(parents=True, exist_ok=True)
        probe.mkdir(exist_ok=True)
        probe.rmdir()

    @contextlib.contextmanager
    def _storage_guard(self) -> Iterator[None]:
        """Turn a disk refusal of the save in flight into one CheckpointStorageError (other errors pass)."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as err:
            code = storage_errno(err)
            if code is None:
                raise
            self._noise.settle(failed=True)
            self._failure = self._storage_failure(code)
            raise self._failure from None

    def _storage_failure(self, code: int) -> CheckpointStorageError:
        """Remove the half-written step; the message: directory, bytes a save needs, bytes free, what to do."""
        step = self._pending_step
        if jax.process_index() == 0 and step is not None:
            for staged in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(staged, ignore_errors=True)  # never renamed into place, so never a finalized step
        kept = [s for s in _good_steps(self.directory) if s != step]
        last = kept[0] if kept else None
        kept_text = (
            f"the last good checkpoint, step {last} in {self.step_path(last)}, is kept"
            if last is not None
            else "no earlier checkpoint exists"
        )
        saving = f"checkpoint step {step}" if step is not None else "a checkpoint"
        then = "then run the same command to resume" if last is not None else "then run the same command again"
        if code in (errno.ENOSPC, errno.EDQUOT):
            on_disk = dir_bytes(self.step_path(last)) if last is not None else 0
            need = max(on_disk, self._pending_bytes)
            basis = f"step {last} takes {format_bytes(on_disk)} on disk" if on_disk else "the size of the state"
            free = free_bytes(self.directory)
            free_text = f"{format_bytes(free)} are free" if free is not None else "the free space is unknown"
            return CheckpointStorageError(
                f"no space left on the disk of {self.workdir} to save {saving}: a save needs about "
                f"{format_bytes(need)} ({basis}) and {free_text}; {kept_text}. Free at least that much space "
                f"or move the run to a bigger disk (another --workdir), {then}."
            )
        what = "it is on a read-only file system" if code == errno.EROFS else "permission denied"
        return CheckpointStorageError(
            f"cannot write {saving} in {self.directory}: {what}; {kept_text}. Make the directory writable "
            f"(check its permissions) or pick another --workdir, {then}."
        )

    # Finding and restoring ----------------------------------------------------

    def step_path(self, step: int) -> Path:
        return self.directory / str(step)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.config.keep_best else None

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Verify, check against the model, then restore `step` onto the shapes/shardings of `abstract_state`."""
        path = self.step_path(step)
        problem = integrity.verify(path)
        if problem is not None:
            raise CheckpointCorruptError(f"checkpoint step {step} in {path} is damaged: {problem}.")
        saved = _state_metadata(path)
        check_compatible(saved, abstract_state, f"checkpoint step {step} in {self.directory}")
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        bad = finite.nonfinite_tensors(finite.named_leaves(_field(restored["state"], "params")))
        if bad:  # never written by jaxformer (the step's finite flag is checked before a save): damaged or foreign
            names = ", ".join(f"{name} ({count} of {size})" for name, count, size in bad[:5])
            raise CheckpointCorruptError(
                f"checkpoint step {step} in {path} has NaN/inf parameters in {len(bad)} tensor(s): {names}."
            )
        return Restored(step, restored["state"], restored["data"], restored["config"])

    def restore_latest(self, abstract_state: Any, start_fresh_if_corrupt: bool = False) -> Restored | None:
        """The newest restorable step (damaged newer ones are reported and moved aside); None when none exists.

        Raises CheckpointCorruptError when every step is damaged, unless `start_fresh_if_corrupt`
        (they are then moved aside and None is returned), and CheckpointMismatchError when the
        newest intact step belongs to a different model.
        """
        damaged: list[int] = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(step, abstract_state)
            except CheckpointCorruptError as err:
                self._warn(f"{err} Trying the previous checkpoint.")
                damaged.append(step)
                continue
            self._quarantine(damaged)
            return restored
        if not damaged:
            return None
        if not start_fresh_if_corrupt:
            raise CheckpointCorruptError(
                f"no readable checkpoint in {self.directory}: step(s) {sorted(damaged)} are damaged (see the "
                "warnings above). Set --config.checkpoint.start_fresh_if_corrupt=True to move them aside and start "
                "over, or use another --workdir."
            )
        self._quarantine(damaged)
        self._warn("every checkpoint was damaged; starting from scratch (checkpoint.start_fresh_if_corrupt=True).")
        return None

    def _quarantine(self, steps: list[int]) -> None:
        """Move damaged steps out of Orbax's directory (a later save of the same step would collide)."""
        if not steps:
            return
        bin_dir = self.workdir / CORRUPT_DIRNAME
        if jax.process_index() == 0:
            bin_dir.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = bin_dir / str(step)
                suffix = 1
                while target.exists():
                    target, suffix = bin_dir / f"{step}-{suffix}", suffix + 1
                shutil.move(str(self.step_path(step)), str(target))
                self._warn(f"moved damaged checkpoint step {step} to {target}.")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxformer_checkpoint_quarantine")
        self.manager.reload()


# Model compatibility ------------------------------------------------------------


def _tree_metadata(directory: Path) -> Any:
    """The saved pytree's array metadata (shape, dtype per leaf) without reading the arrays."""
    metadata = ocp.PyTreeCheckpointHandler().metadata(directory)
    return getattr(metadata, "tree", metadata)


def _state_metadata(step_dir: Path) -> Any:
    return _tree_metadata(step_dir / "state")


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}


def _field(tree: Any, name: str) -> Any:
    return tree[name] if isinstance(tree, dict) else getattr(tree, name)


def param_differences(saved_params: Any, model_params: Any) -> list[str]:
    """'path: checkpoint (a, b) vs model (c, d)' for every parameter whose path or shape differs."""
    saved, model = _shapes(saved_params), _shapes(model_params)
    lines = []
    for name in sorted(set(saved) | set(model)):
        have, want = saved.get(name), model.get(name)
        if have == want:
            continue
        shown_have = "absent" if have is None else str(have)
        shown_want = "absent" if want is None else str(want)
        lines.append(f"{name}: checkpoint {shown_have} vs model {shown_want}")
    return lines


def check_compatible(saved_state: Any, abstract_state: Any, where: str) -> None:
    """Raise CheckpointMismatchError naming every parameter path/shape that differs."""
    differences = param_differences(_field(saved_state, "params"), _field(abstract_state, "params"))
    if differences:
        listed = "; ".join(differences[:_MAX_LISTED])
        more = f"; and {len(differences) - _MAX_LISTED} more" if len(differences) > _MAX_LISTED else ""
        raise CheckpointMismatchError(
            f"{where} was saved by a different model: {len(differences)} parameter(s) differ: {listed}{more}. "
            "Train with the model config of that run (its config.json) or use a new --workdir."
        )
    saved_opt = sorted(_shapes(_field(saved_state, "opt_state")).values())
    model_opt = sorted(_shapes(_field(abstract_state, "opt_state")).values())
    if saved_opt != model_opt:
        raise CheckpointMismatchError(
            f"{where} has optimizer state of a different optimizer ({len(saved_opt)} arrays saved, "
            f"{len(model_opt)} expected); keep train.optimizer as in that run or use a new --workdir."
        )


# Params-only restore and export ------------------------------------------------


def _is_step_dir(path: Path) -> bool:
    return path.name.isdigit() and (path / "state").is_dir()


def _good_steps(checkpoints_dir: Path) -> list[int]:
    if not checkpoints_dir.is_dir():
        return []
    return sorted((int(p.name) for p in checkpoints_dir.iterdir() if _is_step_dir(p)), reverse=True)


def _locate(path: Path, step: int | None) -> Path:
    """The directory to read params from: an export's params dir or one verified step directory."""
    if (path / EXPORT_CONFIG).is_file() and (path / "params").is_dir():
        return path / "params"
    if _is_step_dir(path):
        return path
    checkpoints = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = _good_steps(checkpoints)
    if not steps:
        raise CheckpointError(
            f"no checkpoint found in {path}; pass a training workdir, its checkpoints/ directory, a step "
            "directory or an export directory."
        )
    if step is not None:
        if step not in steps:
            raise CheckpointError(
                f"checkpoint step {step} not found in {checkpoints}; available steps: {sorted(steps)}."
            )
        return checkpoints / str(step)
    for candidate in steps:
        problem = integrity.verify(checkpoints / str(candidate))
        if problem is None:
            return checkpoints / str(candidate)
        _warn(f"checkpoint step {candidate} in {checkpoints} is damaged: {problem}. Trying the previous one.")
    raise CheckpointCorruptError(f"every checkpoint in {checkpoints} is damaged (steps {sorted(steps)}).")


def _single_device_target(metadata_tree: Any) -> Any:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
        metadata_tree,
        is_leaf=lambda x: hasattr(x, "shape"),
    )


def load_params(
    path: str | Path, step: int | None = None, allow_nonfinite: bool = False
) -> tuple[Any, ModelConfig, int | None]:
    """(params on the first local device, model config, step or None for an export).

    NaN/inf parameters raise finite.NonFiniteWeightsError naming them (a warning with allow_nonfinite=True).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint path {path} does not exist.")
    source = _locate(path, step)
    problem = integrity.verify(source)
    if problem is not None:
        raise CheckpointCorruptError(f"checkpoint {source} is damaged: {problem}.")
    if source.name == "params":
        model_config = ModelConfig.from_dict(json.loads((source.parent / EXPORT_CONFIG).read_text(encoding="utf-8")))
        target = _single_device_target(_tree_metadata(source))
        params = ocp.StandardCheckpointer().restore(source, target)
        finite.check_finite(params, f"exported checkpoint {source}", allow_nonfinite)
        return params, model_config, None
    saved_config = ocp.JsonCheckpointHandler().restore(source / "config")
    model_config = ModelConfig.from_dict(saved_config["model"])
    target = {"params": _single_device_target(_field(_state_metadata(source), "params"))}
    restored = ocp.PyTreeCheckpointer().restore(
        source / "state",
        args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
        ),
    )
    finite.check_finite(restored["params"], f"checkpoint {source}", allow_nonfinite)
    return restored["params"], model_config, int(source.name)


def restore_params(
    workdir_or_path: str | Path, step: int | None = None, allow_nonfinite: bool = False
) -> tuple[Any, ModelConfig]:
    """Parameters alone (on one device) and the model config, for inference or fine-tuning.

    `workdir_or_path`: a training workdir, its checkpoints/ directory, one step directory, or an
    export directory; `step` picks a step (default: the newest intact one).
    """
    params, model_config, _ = load_params(workdir_or_path, step, allow_nonfinite)
    return params, model_config


def export_params(workdir: str | Path, out: str | Path, step: int | None = None) -> tuple[Path, int | None]:
    """Write `<out>/params` (sealed Orbax checkpoint of the params) and `<out>/model_config.json`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"export directory {out} already exists and is not empty; choose another --out.")
    params, model_config, step = load_params(workdir, step)
    out.mkdir(parents=True, exist_ok=True)
    noise = quiet_storage_noise()
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(out.resolve() / "params", params)
        checkpointer.wait_until_finished()
        checkpointer.close()
        integrity.seal(out / "params")
    except Exception as err:
        code = storage_errno(err)
        if code is None:
            raise
        noise.settle(failed=True)
        shutil.rmtree(out / "params", ignore_errors=True)
        need = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(params))
        free = free_bytes(out)
        what = os.strerror(code)
        raise CheckpointStorageError(
            f"cannot write the export to {out}: {what}; the parameters need about {format_bytes(need)} and "
            f"{format_bytes(free) if free is not None else 'an unknown amount'} are free. Free space or pick "
            "another --out on a writable disk."
        ) from None
    noise.settle(failed=False)
    (out / EXPORT_CONFIG).write_text(json.dumps(model_config.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    _copy_run_tokenizer(Path(workdir), out)
    return out, step


def _copy_run_tokenizer(workdir: Path, out: Path) -> None:
    """The run's stored tokenizer (`<workdir>/tokenizer/run_tokenizer*`) travels with an export."""
    for base in (workdir, workdir.parent, workdir.parent.parent):  # a workdir, its checkpoints/ or a step dir
        files = sorted((base / "tokenizer").glob("run_tokenizer*")) if (base / "tokenizer").is_dir() else []
        if files:
            (out / "tokenizer").mkdir(exist_ok=True)
            for file in files:
                shutil.copyfile(file, out / "tokenizer" / file.name)
            return
