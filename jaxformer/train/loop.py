"""`train_and_evaluate(experiment, workdir)`: the whole run, from data to the last checkpoint."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxformer.config import ConfigError, ModelConfig
from jaxformer.data import build_pipeline, tokenizer_store
from jaxformer.data.config import HEAD_TASKS
from jaxformer.data.task_sources import LABELS_FILE, TaskPipeline
from jaxformer.decoding.evaluate import split_metrics
from jaxformer.distributed import set_cpu_device_count
from jaxformer.errors import UserError, os_error_fix
from jaxformer.experiment import Experiment, check_model_fits_data
from jaxformer.train import init_from, samples
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.metrics import MetricsWriter, perplexity
from jaxformer.train.optim import make_optimizer
from jaxformer.train.preemption import PreemptionGuard, StoppedBeforeStart
from jaxformer.train.runtime import check_parallelism, make_runtime


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on (NaN loss, ...); the CLI prints the message as one line."""


def model_config_for(experiment: Experiment, vocab_size: int, num_classes: int | None = None) -> ModelConfig:
    """The experiment's model with the vocabulary (and, for classification, the classes) the data needs."""
    changes: dict[str, Any] = {}
    asked = (experiment.raw.get("model") or {}).get("vocab_size")  # set by the user, not by the preset
    if asked is not None and int(asked) < vocab_size:  # ids up to vocab_size - 1 would miss the embedding table
        raise ConfigError(
            f"model.vocab_size={asked} is smaller than the data tokenizer's {vocab_size} ids "
            f"(data.tokenizer={experiment.data.tokenizer!r}): ids {asked}..{vocab_size - 1} have no embedding. "
            f"Drop model.vocab_size (the model takes the tokenizer's size) or set it to at least {vocab_size}."
        )
    if experiment.model.vocab_size != vocab_size:
        changes["vocab_size"] = vocab_size
    if num_classes is not None:
        head = "token_classification" if experiment.data.task == "token_classification" else "classification"
        changes.update(encoder_head=head, num_classes=num_classes)
    return experiment.model.replace(**changes) if changes else experiment.model


def train_and_evaluate(
    experiment: Experiment, workdir: str | Path, start: init_from.Start | None = None, tokenizer: Any = None
) -> dict[str, float]:
    """Train `experiment` in `workdir` (resuming from its latest checkpoint); return the last eval metrics.

    start, tokenizer: a `model.init_from` run's first parameters and tokenizer, from
    `jaxformer.hf.finetune.prepare(experiment)` (which also gives the experiment its checkpoint's model).
    """
    if experiment.init_from is not None and start is None:
        raise ConfigError(
            f"model.init_from={experiment.init_from!r}: run it with `jaxformer train` or pass the experiment "
            "through jaxformer.hf.finetune.prepare(experiment) first."
        )
    set_cpu_device_count(experiment.mesh.cpu_devices)  # before the first device use below
    workdir = prepare_workdir(workdir)
    train_cfg = experiment.train
    process_index, process_count = jax.process_index(), jax.process_count()
    is_writer = process_index == 0
    rng = jax.random.PRNGKey(experiment.seed)

    check_model_fits_data(experiment)  # a family/task or length mismatch: one clear error before any work
    sizes = check_parallelism(experiment, experiment.model)  # mesh, heads and batch vs the devices, before the data
    pipeline: Any
    if experiment.data.task in HEAD_TASKS:  # qa / token_classification rows from JSONL (data/task_sources.py)
        pipeline = TaskPipeline(
            experiment.data, train_cfg.batch_size, experiment.seed, tokenizer, process_index, process_count
        )
    else:
        pipeline = build_pipeline(
            experiment.data,
            family=experiment.model.family,
            batch_size=train_cfg.batch_size,
            seed=experiment.seed,
            workdir=str(workdir),
            process_index=process_index,
            process_count=process_count,
            tokenizer=tokenizer,
        )
    model_config = model_config_for(experiment, pipeline.vocab_size, pipeline.num_classes)
    tx, schedule = make_optimizer(train_cfg, model_config.d_model)
    runtime = make_runtime(experiment, model_config, tx, schedule, sizes, start)  # the mesh resolved once, above

    checkpointer = Checkpointer(workdir, experiment.checkpoint)
    start_step = 0
    restored = checkpointer.restore_latest(  # the target costs nothing: a resumed run never re-imports init_from
        runtime.state_target(rng) if runtime.state_target else runtime.abstract_state(runtime.init_state(rng)),
        start_fresh_if_corrupt=experiment.checkpoint.start_fresh_if_corrupt,
    )
    base = runtime.base_reference()  # a LoRA run: its base (re-)imported and fingerprinted
    if restored is None:
        state = runtime.init_state(rng)
    else:
        tokenizer_store.check_matches(pipeline.tokenizer, workdir)  # same ids as the checkpoints were trained on
        init_from.check_base(restored.config, base, f"checkpoint step {restored.step} in {checkpointer.directory}")
        state = restored.state
        pipeline.set_state(restored.data_state)
        start_step = int(state.step)
        if is_writer:
            print(f"Resumed from checkpoint step {start_step} in {checkpointer.step_path(restored.step)}", flush=True)
    # The run is accepted (checkpoint, data state and tokenizer fit): only now does the workdir change.
    if is_writer:
        _write_run_files(workdir, experiment, model_config, pipeline)

    writer = MetricsWriter(workdir, train_cfg.steps, start_step, enabled=is_writer, progress=train_cfg.progress)
    saved_config = {"experiment": experiment.raw, "model": model_config.to_dict()}
    if base is not None:
        saved_config[init_from.BASE_KEY] = base
    batches = pipeline.train_batches()
    last_eval: dict[str, float] = {}
    window: list[dict[str, Any]] = []
    window_start = time.perf_counter()
    step = start_step
    loss_floor, warnings = math.inf, []  # lowest logged loss; divergence messages
    flags: list[tuple[int, Any]] = []  # (step, on-device finite flag) not yet checked
    guard = PreemptionGuard().install()  # SIGTERM/SIGINT: finish the step, save, stop (exit 0)

    def evaluate(at: int) -> dict[str, float]:
        eval_batches = (runtime.put_batch(b) for b in pipeline.eval_batches("validation"))
        result = split_metrics(runtime.eval_step, state.params, eval_batches, train_cfg.eval_batches)
        params = runtime.host_params(state)
        result.update(samples.task_metrics(model_config, params, pipeline, train_cfg.num_samples, writer))
        writer.write(at, result)
        return result

    try:
        if guard.before_start and process_count == 1:  # several processes stop together at the first step instead
            raise StoppedBeforeStart(guard.received or "signal")
        if train_cfg.eval_at_start and step == 0:  # the starting weights (e.g. an imported checkpoint), as step 0
            evaluate(0)
            window_start = time.perf_counter()
        while step < train_cfg.steps:
            batch = next(batches)
            state, metrics = runtime.train_step(state, runtime.put_batch(batch))
            step += 1
            window.append(metrics)
            flags.append((step, metrics["finite"]))
            writer.advance()
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                jax.block_until_ready(window[-1])  # steps run asynchronously: time them, not their dispatch
                _check_finite(flags, checkpointer)
                record = _summarise(window, time.perf_counter() - window_start)
                window, window_start = [], time.perf_counter()
                diverged = _divergence(record["loss"], loss_floor, train_cfg.divergence_factor, step)
                loss_floor = min(loss_floor, record["loss"])
                if diverged:
                    warnings.append(diverged)
                    print(f"WARNING: {diverged}", file=sys.stderr, flush=True)
                    if train_cfg.on_divergence == "stop":
                        raise TrainingError(f"{diverged}; stopped (train.on_divergence='stop').")
                writer.write(step, record)
            is_eval = (train_cfg.eval_every and step % train_cfg.eval_every == 0) or step == train_cfg.steps
            if is_eval:
                _check_finite(flags, checkpointer)  # evaluating or sampling NaN parameters helps nobody
                last_eval = evaluate(step)
                window_start = time.perf_counter()
            every = experiment.checkpoint.every
            if (every and step % every == 0) or step == train_cfg.steps:
                _check_finite(flags, checkpointer)  # a non-finite state is never written
                checkpointer.save(
                    step, state, pipeline.get_state(), saved_config, metrics=last_eval if is_eval else None
                )
            if guard.should_stop(step):
                _check_finite(flags, checkpointer)
                checkpointer.save(step, state, pipeline.get_state(), saved_config)  # no-op if saved just above
                checkpointer.wait()
                raise guard.stopped(step, checkpointer.step_path(step))
    finally:
        guard.uninstall()
        checkpointer.close()
        writer.close()
    if warnings and is_writer:
        print(f"WARNING: this run diverged ({warnings[0]}); its results are not trustworthy.", file=sys.stderr)
    return last_eval


DIVERGENCE_FLOOR = 0.01  # nats: losses below this are "solved" for the divergence rule


def _divergence(loss: float, floor: float, factor: float, step: int) -> str | None:
    """The divergence message when `loss` exceeds `factor` x the lowest loss logged so far, else None.

    The floor counts as at least DIVERGENCE_FLOOR: a run that has learnt its task (loss near 0) moving
    from 1e-4 to 1e-2 is noise, not an explosion.
    """
    if factor and math.isfinite(floor) and loss > factor * max(floor, DIVERGENCE_FLOOR):
        return (
            f"loss {loss:.4g} at step {step} is over {factor:g}x the lowest logged loss {floor:.4g}: the run is "
            "diverging; lower train.learning_rate or enable train.grad_clip"
        )
    return None


def _check_finite(flags: list[tuple[int, Any]], checkpointer: Checkpointer) -> None:
    """Raise TrainingError if any step since the last check had a non-finite loss, gradient or parameter.

    Names the newest checkpoint that exists (all of them are finite: this runs before every save).
    """
    if not flags:
        return
    fetched = jax.device_get([flag for _, flag in flags])
    bad = next((step for (step, _), ok in zip(flags, fetched, strict=True) if not bool(ok)), None)
    flags.clear()
    if bad is None:
        return
    checkpointer.wait()
    last = checkpointer.latest_step()
    where = (
        f"the last finite checkpoint is step {last} in {checkpointer.step_path(last)} (resume from it)"
        if last is not None
        else "there is no checkpoint to resume from (nothing was saved)"
    )
    raise TrainingError(
        f"the loss, gradients or parameters became NaN/inf at step {bad}; nothing non-finite was saved and "
        f"{where}. Lower train.learning_rate or enable train.grad_clip."
    )


def prepare_workdir(workdir: str | Path) -> Path:
    """The run's directory, created if new. An empty name (which would mean the current directory), a
    path that is a file, or one that cannot be created is one clear ConfigError, before any work."""
    if not str(workdir).strip():
        raise ConfigError("--workdir is empty; give a directory for the run, e.g. --workdir runs/my_run.")
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"--workdir {str(path)!r} is a file, not a directory; choose another path or remove the file."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"--workdir {str(path)!r}: a parent of it is a file, not a directory; choose another path."
        ) from None
    except PermissionError:
        raise ConfigError(
            f"--workdir {str(path)!r} cannot be created (permission denied); choose a directory you can write to."
        ) from None
    except OSError as err:
        what, fix = os_error_fix(err, "--workdir", str(path))
        raise ConfigError(f"--workdir {str(path)!r} cannot be created: {what}; {fix}.") from None
    return path


def _write_run_files(workdir: Path, experiment: Experiment, model_config: ModelConfig, pipeline: Any) -> None:
    """config.json, model_config.json and the run's tokenizer, each written to a temporary file then renamed."""
    for name, values in (("config.json", experiment.raw), ("model_config.json", model_config.to_dict())):
        partial = workdir / f"{name}.partial"
        partial.write_text(json.dumps(values, indent=2, sort_keys=True, default=str))
        os.replace(partial, workdir / name)
    tokenizer_store.save(pipeline.tokenizer, workdir)
    if getattr(pipeline, "label_names", None) is not None:  # token classification: class names for the export
        (workdir / LABELS_FILE).write_text(json.dumps(pipeline.label_names))


def _summarise(window: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Mean of the window's step metrics, token-weighted where it matters, plus speed."""
    fetched = jax.device_get(window)
    tokens = np.array([float(m["tokens"]) for m in fetched])
    weights = tokens / max(tokens.sum(), 1.0)
    loss = float(sum(w * float(m["loss"]) for w, m in zip(weights, fetched, strict=True)))
    accuracy = float(sum(w * float(m["accuracy"]) for w, m in zip(weights, fetched, strict=True)))
    steps = len(fetched)
    return {
        "loss": loss,
        "accuracy": accuracy,
        "perplexity": perplexity(loss),
        "learning_rate": float(fetched[-1]["learning_rate"]),
        "grad_norm": float(np.mean([float(m["grad_norm"]) for m in fetched])),
        "tokens_per_sec": float(tokens.sum()) / max(seconds, 1e-9),
        "step_time": seconds / max(steps, 1),
    }
