"""The engine worker: one thread that owns the models and merges many callers' work into batches.

Callers (HTTP handlers, pipelines) tokenize on their own threads and submit jobs; the worker
takes a window of queued embedding jobs up to the token budget, plans packed batches over all
their sequences together, and hands each job exactly its own vectors. Rerank jobs run one at a
time (each request's shared prefix is reused within that request).

Guarantees:
- every submitted job's future completes, with a result or an exception, also when a batch
  fails, when the worker stops, and when the worker thread itself dies;
- the queue is bounded (requests and tokens): a full queue raises OverloadedError at submit
  time, so memory never grows without limit;
- a job cancelled while still queued (its client went away) is dropped without computing it;
- no polling: the thread sleeps on a condition variable until work or a stop arrives.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future

from ..errors import EngineStopped, OverloadedError
from .jobs import NULL_OBSERVER, BatchObserver, EmbedJob, Forward, RerankJob, run_embed_jobs, run_rerank_job
from .options import QueueLimits

__all__ = ["EngineWorker", "Job"]

log = logging.getLogger("q3embed")

Job = EmbedJob | RerankJob


class EngineWorker:
    def __init__(self, forward: Forward, limits: QueueLimits = QueueLimits(),
                 observer: BatchObserver | None = None, name: str = "q3embed-engine") -> None:
        self._forward = forward
        self.limits = limits
        self.observer = observer or NULL_OBSERVER
        self._queue: deque[Job] = deque()
        self._queued_tokens = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._dead: str | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    # ------------------------------------------------------------------ caller side

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Future:
        """Queue a job; raises OverloadedError when the queue is full, EngineStopped when stopping."""
        with self._wakeup:
            if self._dead or self._stopping:
                raise EngineStopped(self._dead or "the engine is shutting down")
            if (len(self._queue) >= self.limits.max_queued_requests
                    or (self._queue and self._queued_tokens + job.tokens > self.limits.max_queued_tokens)):
                raise OverloadedError(
                    f"the engine queue is full ({len(self._queue)} requests, {self._queued_tokens} tokens "
                    "waiting); retry shortly")
            self._queue.append(job)
            self._queued_tokens += job.tokens
            self._wakeup.notify()
        job.future.add_done_callback(lambda future: self._forget(job) if future.cancelled() else None)
        return job.future

    def _forget(self, job: Job) -> None:
        """A job cancelled while queued leaves the queue at once, freeing its place."""
        with self._wakeup:
            try:
                self._queue.remove(job)
            except ValueError:  # already taken by the worker (which skips cancelled jobs)
                return
            self._queued_tokens -= job.tokens

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the thread (queued work is never silently lost)."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._dead is None

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    # ------------------------------------------------------------------ worker side

    def _main(self) -> None:
        try:
            while (window := self._take_window()) is not None:
                self._run_window(window)
        except BaseException as exc:  # a bug in the loop itself: no caller may be left waiting
            self._dead = f"the engine worker died: {type(exc).__name__}: {exc}"
            log.exception("engine worker died")
        finally:
            self._fail_queued(EngineStopped(self._dead or "the engine stopped"))

    def _take_window(self) -> list[Job] | None:
        """Block until work arrives; return queued embed jobs up to the token budget, or one rerank job.

        Jobs cancelled while queued (their client disconnected) are dropped here.
        """
        with self._wakeup:
            while not self._queue and not self._stopping:
                self._wakeup.wait()
            if not self._queue:
                return None
            window: list[Job] = []
            tokens = 0
            while self._queue:
                job = self._queue[0]
                if window and (isinstance(job, RerankJob) or isinstance(window[0], RerankJob)
                               or tokens + job.tokens > self.limits.max_batch_tokens):
                    break
                self._queue.popleft()
                self._queued_tokens -= job.tokens
                if job.future.set_running_or_notify_cancel():
                    window.append(job)
                    tokens += job.tokens
            return window

    def _run_window(self, window: list[Job]) -> None:
        if window and isinstance(window[0], RerankJob):
            run_rerank_job(window[0], self.observer)
        elif window:
            embeds = [job for job in window if isinstance(job, EmbedJob)]
            run_embed_jobs(embeds, self._forward, self.limits.max_batch_tokens, self.observer)

    def _fail_queued(self, error: Exception) -> None:
        with self._wakeup:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._queued_tokens = 0
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)

