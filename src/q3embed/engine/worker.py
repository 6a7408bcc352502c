"""The engine worker: one thread that owns the models and runs every caller's work through one
`Scheduler` (engine/jobs.py), one packed batch at a time. The thread is a `ModelThread`
(engine/model_thread.py): the engine loads and warms its models up on it before the loop starts.

Callers (HTTP handlers, pipelines) tokenize on their own threads and submit jobs. Between two
batches the worker admits what arrived, drops what was cancelled, and lets the least-served job
go first, so a short request waits about one batch behind a long one.

Guarantees:
- every submitted job's future completes, with a result or an exception, also when a batch
  fails, when the worker stops, and when the worker thread itself dies;
- the queue is bounded (requests and tokens, counted until a job finishes): a full queue raises
  OverloadedError at submit time, and a request larger than `max_request_tokens` is refused
  (RequestTooLargeError), so memory never grows without limit;
- a job cancelled before or while it runs (its client went away) is dropped before its next batch;
- no polling: the thread sleeps on a condition variable until work or a stop arrives.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError, wait

from ..errors import EngineStopped, OverloadedError
from .jobs import NULL_OBSERVER, BatchObserver, Forward, Job, Scheduler
from .model_thread import ModelThread
from .options import QueueLimits

__all__ = ["EngineWorker"]

log = logging.getLogger("q3embed")


class EngineWorker:
    def __init__(self, forward: Forward, limits: QueueLimits = QueueLimits(),
                 observer: BatchObserver | None = None, thread: ModelThread | None = None) -> None:
        """`thread`: the one the models were loaded on (a new one by default)."""
        self.limits = limits
        self._scheduler = Scheduler(forward, limits.max_batch_tokens, observer or NULL_OBSERVER)
        self._queue: deque[Job] = deque()  # submitted, not yet admitted by the worker thread
        self._counted: set[Job] = set()  # submitted and not finished: what the limits count
        self._counted_tokens = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._dead: str | None = None
        self._thread = thread or ModelThread()
        self._loop: Future | None = None  # the worker loop, once started on the thread

    @property
    def observer(self) -> BatchObserver:
        return self._scheduler.observer

    @observer.setter
    def observer(self, observer: BatchObserver) -> None:
        self._scheduler.observer = observer

    # ------------------------------------------------------------------ caller side

    def start(self) -> None:
        if self._loop is None:
            self._loop = self._thread.submit(self._main)
            self._thread.close()  # the loop is the thread's last task

    def submit(self, job: Job) -> Future:
        """Queue a job; raises RequestTooLargeError, OverloadedError when full, EngineStopped when stopping."""
        self.limits.check_request(job.tokens)
        with self._wakeup:
            if self._dead or self._stopping:
                raise EngineStopped(self._dead or "the engine is shutting down")
            if (len(self._counted) >= self.limits.max_queued_requests
                    or self._counted_tokens + job.tokens > self.limits.max_queued_tokens):
                raise OverloadedError(
                    f"the engine queue is full ({len(self._counted)} requests, {self._counted_tokens} tokens "
                    "waiting); retry shortly")
            self._queue.append(job)
            self._counted.add(job)
            self._counted_tokens += job.tokens
            self._wakeup.notify()
        job.future.add_done_callback(lambda future: self._forget(job) if future.cancelled() else None)
        return job.future

    def _forget(self, job: Job) -> None:
        """A job cancelled before the worker admitted it leaves the queue at once, freeing its place;
        one already admitted is dropped by the scheduler before its next batch."""
        with self._wakeup:
            try:
                self._queue.remove(job)
            except ValueError:
                return
            self._release(job)

    def _release(self, job: Job) -> None:
        """Called with the lock held, once per job."""
        if job in self._counted:
            self._counted.discard(job)
            self._counted_tokens -= job.tokens

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the thread (queued work is never silently lost)."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._loop is None:  # never started: nothing will run on the thread
            self._thread.close()
        elif threading.current_thread() is not self._thread.thread:
            wait([self._loop], timeout)

    @property
    def alive(self) -> bool:
        return self._loop is not None and not self._loop.done() and self._dead is None

    @property
    def queued_requests(self) -> int:
        """Requests submitted and not finished (waiting or part-way through)."""
        return len(self._counted)

    @property
    def queued_tokens(self) -> int:
        return self._counted_tokens

    # ------------------------------------------------------------------ worker side

    def _main(self) -> None:
        try:
            while self._admit():
                self._scheduler.step()
                with self._wakeup:
                    for job in self._scheduler.take_finished():
                        self._release(job)
        except BaseException as exc:  # a bug in the loop itself: no caller may be left waiting
            self._dead = f"the engine worker died: {type(exc).__name__}: {exc}"
            log.exception("engine worker died")
        finally:
            self._fail_all(EngineStopped(self._dead or "the engine stopped"))

    def _admit(self) -> bool:
        """Block until there is work; move what was submitted into the scheduler. False: stop now."""
        with self._wakeup:
            while not self._queue and not self._scheduler.jobs and not self._stopping:
                self._wakeup.wait()
            while self._queue:
                self._scheduler.add(self._queue.popleft())
            return bool(self._scheduler.jobs)

    def _fail_all(self, error: Exception) -> None:
        with self._wakeup:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._counted.clear()
            self._counted_tokens = 0
        self._scheduler.fail_all(error)
        for job in pending:
            if not job.future.cancelled():
                try:
                    job.future.set_exception(error)
                except InvalidStateError:  # cancelled meanwhile
                    pass
