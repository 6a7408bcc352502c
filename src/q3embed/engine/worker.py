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
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from ..errors import OverloadedError, Q3EmbedError
from .batch import plan_batches

__all__ = [
    "BatchObserver",
    "EmbedJob",
    "EngineFailure",
    "EngineStopped",
    "EngineWorker",
    "QueueLimits",
    "RerankJob",
]

log = logging.getLogger("q3embed")


class EngineFailure(RuntimeError):
    """The model raised while computing a batch; only the jobs of that batch fail."""


class EngineStopped(RuntimeError):
    """The worker is stopped or dead: it takes no more work."""


@dataclass(frozen=True)
class QueueLimits:
    max_batch_tokens: int = 8192
    max_queued_requests: int = 256
    max_queued_tokens: int = 262_144  # 32 full batches of 8192 tokens


@dataclass(eq=False)
class EmbedJob:
    """Token id lists of one request -> pooled fp32 vectors [n, hidden], in the same order."""

    sequences: Sequence[Sequence[int]]
    future: Future[Tensor] = field(default_factory=Future)

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


@dataclass(eq=False)
class RerankJob:
    """One rerank request, run as a unit so its documents share the query's keys/values."""

    run: Callable[[], object]  # the scoring call, made on the worker thread
    tokens: int
    future: Future[object] = field(default_factory=Future)


Job = EmbedJob | RerankJob


class BatchObserver(Protocol):
    """Receives what the worker does (the server's metrics implement it)."""

    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None: ...


class _NullObserver:
    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None:
        pass


EmbedFn = Callable[[Sequence[Sequence[int]]], Tensor]  # token id lists -> [b, hidden]


class EngineWorker:
    def __init__(self, embed: EmbedFn, limits: QueueLimits = QueueLimits(),
                 observer: BatchObserver | None = None, name: str = "q3embed-engine") -> None:
        self._embed = embed
        self.limits = limits
        self.observer = observer or _NullObserver()
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
            self._run_rerank(window[0])
        elif window:
            self._run_embeds([job for job in window if isinstance(job, EmbedJob)])

    def _run_rerank(self, job: RerankJob) -> None:
        started = time.perf_counter()
        try:
            result = job.run()
        except Exception as exc:
            job.future.set_exception(_failure(exc))
            return
        self.observer.batch_done(1, job.tokens, time.perf_counter() - started)
        job.future.set_result(result)

    def _run_embeds(self, jobs: list[EmbedJob]) -> None:
        """All sequences of the window planned together; a failing batch fails only its own jobs."""
        owners = [(j, i) for j, job in enumerate(jobs) for i in range(len(job.sequences))]
        sequences = [jobs[j].sequences[i] for j, i in owners]
        outputs: list[Tensor | None] = [None] * len(jobs)
        failed: dict[int, Exception] = {}
        for batch in plan_batches([len(s) for s in sequences], self.limits.max_batch_tokens):
            batch = [k for k in batch if owners[k][0] not in failed]
            if batch:
                self._embed_batch(batch, owners, sequences, jobs, outputs, failed)
        for j, job in enumerate(jobs):
            if j in failed:
                job.future.set_exception(failed[j])
            else:
                job.future.set_result(outputs[j])

    def _embed_batch(self, batch: list[int], owners: list[tuple[int, int]], sequences: list[Sequence[int]],
                     jobs: list[EmbedJob], outputs: list[Tensor | None], failed: dict[int, Exception]) -> None:
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                pooled = self._embed([sequences[k] for k in batch]).to("cpu", torch.float32)  # [b, hidden]
        except Exception as exc:
            for k in batch:
                failed.setdefault(owners[k][0], _failure(exc))
            return
        tokens = sum(len(sequences[k]) for k in batch)
        self.observer.batch_done(len(batch), tokens, time.perf_counter() - started)
        for row, k in enumerate(batch):
            j, i = owners[k]
            if outputs[j] is None:
                outputs[j] = torch.empty(len(jobs[j].sequences), pooled.shape[1])
            outputs[j][i] = pooled[row]

    def _fail_queued(self, error: Exception) -> None:
        with self._wakeup:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._queued_tokens = 0
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)


def _failure(exc: Exception) -> Exception:
    """User errors raised inside the job (e.g. an over-long input) pass through unchanged."""
    if isinstance(exc, Q3EmbedError):
        return exc
    log.error("model failure in a batch: %s: %s", type(exc).__name__, exc)
    return EngineFailure(f"the model failed on this batch: {type(exc).__name__}: {exc}")
