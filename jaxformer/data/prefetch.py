"""Run a producer ahead of its consumer in a background thread.

Batches are assembled in NumPy, which releases the GIL for its copies, while the training
step runs in XLA, so one thread is enough to hide the input pipeline behind the step. Every
queued batch travels with the iterator state *after* it, so the consumer can report the exact
position of what it has received, however far the thread has run ahead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class Prefetcher(Iterator[Any]):
    """Iterate over `produce()` results computed up to `depth` items ahead (depth 0: synchronously)."""

    def __init__(self, produce: Callable[[], Any], depth: int) -> None:
        self.produce, self.depth = produce, depth
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="jaxformer-data-prefetch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._put(self.produce())
        except BaseException as err:  # handed to the consumer, raised there
            self._put((_DONE, err))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __next__(self) -> Any:
        if self._thread is None:
            return self.produce()
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
            self.close()
            raise item[1]
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item it is making) and drop what was queued."""
        self._stop.set()
        if self._thread is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=5.0)

    def __del__(self) -> None:
        self._stop.set()
