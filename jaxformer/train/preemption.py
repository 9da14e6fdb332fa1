"""Stopping cleanly on SIGTERM / SIGINT: finish the step, save, exit 0.

`PreemptionGuard` turns the signal into a flag the training loop reads after every step
(`should_stop(step)`); the loop then saves a checkpoint at that step and raises
`Preempted`, whose message says which step was saved and where. The CLI prints it and
exits with status 0, so schedulers see a clean stop and a re-run resumes.

Several processes (multi-host) must stop at the same step. When `jax.distributed` runs
its preemption service, JAX itself catches SIGTERM and `should_stop` asks
`multihost_utils.reached_preemption_sync_point(step)`, which is True on every process
at one agreed step. Without that service, each process's flag is all-gathered every
step and any process's signal stops all of them at the same step.

A second signal while stopping raises KeyboardInterrupt (for an impatient Ctrl-C).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

try:  # private: where JAX keeps its preemption sync manager
    from jax._src import distributed as jax_distributed
except ImportError:  # pragma: no cover - a JAX that moved it
    jax_distributed = None

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; not an error (the CLI exits 0)."""

    def __init__(self, step: int, checkpoint_path: str | Path, signal_name: str):
        self.step = step
        self.checkpoint_path = Path(checkpoint_path)
        self.signal_name = signal_name
        super().__init__(
            f"Stopped on {signal_name} after step {step}; checkpoint saved to {self.checkpoint_path}. "
            "Run the same command again to resume from it."
        )


def _preemption_service_running() -> bool:
    """True when jax.distributed runs the preemption sync manager (it then owns SIGTERM)."""
    try:
        return jax_distributed.global_state.preemption_sync_manager is not None  # type: ignore[union-attr]
    except AttributeError:  # a JAX without this private state (or none at all)
        return False


class PreemptionGuard:
    """Signal handlers that set a flag instead of killing the process.

    Use `install()` before the loop and `uninstall()` after it (or `with guard:`);
    call `should_stop(step)` on every process after every step.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS):
        self.signals = signals
        self.received: str | None = None  # name of the first signal caught
        self.before_start = False  # the signal arrived during start-up (taken over from a StartupGuard)
        self._previous: dict[signal.Signals, Any] = {}
        self._multi_process = jax.process_count() > 1
        self._use_sync_point = self._multi_process and _preemption_service_running()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name} while stopping")
        self.received = signal.Signals(signum).name

    def install(self) -> PreemptionGuard:
        """Catch the signals (main thread only; elsewhere the default behaviour stays)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            if self._use_sync_point and sig == signal.SIGTERM:
                continue  # JAX's preemption notifier listens for SIGTERM itself
            previous = signal.signal(sig, self._handle)
            self._previous[sig] = previous
            # A signal the StartupGuard recorded during start-up: this guard takes it over.
            pending = getattr(getattr(previous, "__self__", None), "received", None)
            if isinstance(pending, str) and self.received is None:
                self.received, self.before_start = pending, True
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionGuard:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def should_stop(self, step: int) -> bool:
        """True when the run should save at `step` and stop; the same answer on every process."""
        if not self._multi_process:
            return self.received is not None
        if self._use_sync_point and multihost_utils.reached_preemption_sync_point(step):
            self.received = self.received or "SIGTERM"
            return True
        flags = multihost_utils.process_allgather(np.array(self.received is not None, np.int32))
        if np.any(flags):
            self.received = self.received or "a signal on another process"
            return True
        return False

    def stopped(self, step: int, checkpoint_path: str | Path) -> Preempted:
        """The exception the loop raises once the checkpoint of `step` is saved."""
        return Preempted(step, checkpoint_path, self.received or "signal")


class StoppedBeforeStart(Exception):
    """A signal arrived while the run was starting (before its first step): nothing to save (CLI exit 0)."""

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(
            f"Stopped on {signal_name} before the first step; nothing to save (any checkpoints already in the "
            "workdir are untouched). Run the same command again to start."
        )


class StartupGuard:
    """SIGTERM/SIGINT during start-up (joining hosts, building data, restoring, compiling) is recorded, not fatal.

    Raising from the handler would interrupt whatever runs at that moment (JAX creating its backend,
    Orbax restoring) and can leave it broken, so the handler only records the signal. The CLI checks
    it between start-up stages; the training loop's `PreemptionGuard`, installed after start-up,
    takes the recorded signal over and stops before the first step (`StoppedBeforeStart`, nothing
    to save; with several processes it stops at the first step every process agrees on).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS):
        self.signals = signals
        self.received: str | None = None  # the signal's name once one arrived
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name} during start-up")
        self.received = signal.Signals(signum).name

    def check(self) -> None:
        """Raise StoppedBeforeStart if a signal arrived."""
        if self.received is not None:
            raise StoppedBeforeStart(self.received)

    def __enter__(self) -> StartupGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
