"""One thread for all of an engine's model work: loading, warm-up and every batch.

torch runs its CPU kernels on OpenMP thread teams, one per thread that starts parallel work. A
model loaded on the main thread and run from the engine's worker thread makes two teams, and on a
machine with few cores libgomp then throttles its spin-wait, so every parallel region of the
worker's team pays a futex wake-up: one short query took 66-82 ms from a second thread against
54-60 ms on the thread that loaded the model (2-core EPYC, docs/benchmarks.md). Loading and running
on the same thread keeps one team.

A daemon thread, so that an engine nobody stopped does not keep the interpreter from exiting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["ModelThread"]

T = TypeVar("T")
_STOP = object()


class ModelThread:
    def __init__(self, name: str = "q3embed-engine") -> None:
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def submit(self, function: Callable[[], T]) -> Future[T]:
        """Run `function` on the thread after what was submitted before it; its Future."""
        if self._closed:
            raise RuntimeError(f"{self.thread.name} takes no more work: it was closed")
        future: Future[T] = Future()
        self._tasks.put((function, future))
        return future

    def run(self, function: Callable[[], T]) -> T:
        """Run `function` on the thread and wait for it (its exception is raised here)."""
        if threading.current_thread() is self.thread:
            return function()
        return self.submit(function).result()

    def close(self) -> None:
        """End the thread once the tasks submitted so far are done."""
        if not self._closed:
            self._closed = True
            self._tasks.put(_STOP)

    def _serve(self) -> None:
        while (task := self._tasks.get()) is not _STOP:
            function, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)
