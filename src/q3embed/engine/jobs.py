"""Units of model work and the one place that batches and scatters them: the `Scheduler`.

A job is one request's token id lists: an `EmbedJob` (pooled vectors back) or a `RerankJob`
(scores back). The scheduler holds the jobs in progress and runs one packed batch per `step`:

- **Fair**: the job that has been served the fewest tokens goes first (least attained service),
  so a short request that arrives behind a long one waits for the batch in progress, not the long
  one's whole run; jobs at the same stage (arrived together) share batches.
- **Cancellable**: a job whose future was cancelled (its client left) is dropped before the
  next batch; none of its remaining sequences is computed.
- **Isolated**: a batch that raises fails only the jobs it held; every future completes.
- **Overlapped on a GPU**: a batch's pooled rows come back to the host asynchronously (pinned
  memory, one copy per batch, not per request); the scheduler launches the next batch before it
  waits for them, so the GPU computes batch N+1 while the host scatters batch N's results and
  answers its requests. A CPU's results are ready when the forward pass returns.

The engine's worker thread drives one scheduler for all callers; `Embedder.run` and
`Reranker.score_tokens` drive one inline for their single job. A rerank job's batches hold only
its own pairs: they continue the request's shared prefix (prefill once, keys and values reused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import EngineFailure, Q3EmbedError

__all__ = ["BatchObserver", "EmbedJob", "Forward", "NULL_OBSERVER", "RerankJob", "RerankBatches", "Scheduler",
           "run_jobs", "PendingRows", "copy_back"]

log = logging.getLogger("q3embed")

Forward = Callable[[Sequence[Sequence[int]]], Tensor]  # one batch of token id lists -> [b, hidden]


class BatchObserver(Protocol):
    """Receives what the model did (the server's metrics implement it)."""

    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None: ...


class _NullObserver:
    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None:
        pass


NULL_OBSERVER: BatchObserver = _NullObserver()


class PendingRows(Protocol):
    """Pooled rows on their way to the host."""

    def wait(self) -> Tensor:
        """-> [b, hidden] fp32 on the CPU; raises what the device raised while computing them."""
        ...


class _RowsFromGpu:
    def __init__(self, pooled: Tensor) -> None:
        self.rows = torch.empty(pooled.shape, dtype=torch.float32, pin_memory=True)  # [b, hidden]
        self.rows.copy_(pooled, non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record()

    def wait(self) -> Tensor:
        self.done.synchronize()
        return self.rows


def copy_back(pooled: Tensor) -> Tensor | PendingRows:
    """A batch's pooled rows [b, hidden] as fp32 on the host: ready now from a CPU, on their way
    from a GPU (the copy is queued behind the forward pass; nothing waits for it yet)."""
    if pooled.is_cuda:
        return _RowsFromGpu(pooled)
    return pooled.to("cpu", torch.float32)


@dataclass(eq=False)
class _InFlight:
    """An embedding batch launched on the device whose rows are not back yet."""

    picks: list[tuple["EmbedJob", list[int]]]
    rows: PendingRows
    tokens: int
    started: float


class RerankBatches(Protocol):
    """How a reranker scores one request in several batches (engine/reranker.py implements it)."""

    def start(self, prepared: Any) -> tuple[Any, list[int]]:
        """Work shared by all pairs (the prefix's keys and values): the state `score` takes, and
        the tokens each pair still costs."""
        ...

    def score(self, state: Any, indices: Sequence[int]) -> list[float]:
        """Scores of the pairs `indices`, in that order."""
        ...


@dataclass(eq=False)
class _Job:
    sequences: Sequence[Sequence[int]]
    future: Future = field(default_factory=Future)
    tokens: int = field(default=0, init=False)  # what the request costs, fixed (the queue counts it)
    lengths: list[int] = field(init=False)  # what each sequence still costs to compute
    served: int = field(default=0, init=False)  # tokens launched so far (the fairness key)
    pending: list[int] = field(init=False)  # indices not launched yet, longest first
    running: int = field(default=0, init=False)  # batches launched whose results are not back yet

    def __post_init__(self) -> None:
        self.lengths = [len(s) for s in self.sequences]
        self.tokens = sum(self.lengths)
        self.pending = sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i])

    def take(self, room: int, alone: bool) -> list[int]:
        """Pending indices whose sequences fit in `room` tokens, longest first; when `alone` (an
        empty batch), at least one, so a sequence longer than the budget gets a batch of its own."""
        picked, used = [], 0
        for index in self.pending:
            length = self.lengths[index]
            if used + length <= room or (alone and not picked):
                picked.append(index)
                used += length
        taken = set(picked)
        self.pending = [i for i in self.pending if i not in taken]
        return picked


@dataclass(eq=False)
class EmbedJob(_Job):
    """Token id lists of one request -> pooled fp32 vectors [n, hidden] on the CPU, in the same
    order, or what `finish` makes of them (run on the worker thread)."""

    finish: Callable[[Tensor], Any] | None = None
    output: Tensor | None = field(default=None, init=False)

    def store(self, indices: Sequence[int], rows: Tensor) -> None:
        if self.output is None:
            self.output = torch.empty(len(self.sequences), rows.shape[1])
        self.output[list(indices)] = rows

    def result(self) -> Any:
        pooled = self.output if self.output is not None else torch.empty(0, 0)
        return pooled if self.finish is None else self.finish(pooled)


@dataclass(eq=False)
class RerankJob(_Job):
    """One rerank request -> one score per pair, in order; its batches share the request's prefix.

    `sequences` are the pairs' token ids; `prepared` is what the scorer's tokenizer returned
    (engine/reranker.py PreparedRerank), handed to `scorer.start`."""

    scorer: RerankBatches | None = None
    prepared: Any = None
    state: Any = field(default=None, init=False)
    started: bool = field(default=False, init=False)
    scores: list[float] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.scores = [0.0] * len(self.sequences)
        if self.prepared is not None:
            self.tokens = self.prepared.tokens

    def result(self) -> list[float]:
        return self.scores


Job = EmbedJob | RerankJob


def _failure(exc: Exception) -> Exception:
    """User errors raised inside the job (e.g. an over-long input) pass through unchanged."""
    if isinstance(exc, Q3EmbedError):
        return exc
    log.error("model failure in a batch: %s: %s", type(exc).__name__, exc)
    failure = EngineFailure(f"the model failed on this batch: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure


def _settle(job: Job, error: Exception | None = None) -> None:
    """Complete a job's future, unless its caller cancelled it meanwhile."""
    if error is None:
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - a failing `finish` fails its own request, not the worker
            error = _failure(exc)
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except InvalidStateError:  # cancelled between the last check and now: nobody is waiting
        pass


class Scheduler:
    """The jobs in progress, one batch per `step` (not thread-safe: one thread drives it)."""

    def __init__(self, forward: Forward, max_batch_tokens: int, observer: BatchObserver = NULL_OBSERVER,
                 copy_back: Callable[[Tensor], Tensor | PendingRows] = copy_back) -> None:
        self.forward = forward
        self.max_batch_tokens = max_batch_tokens
        self.observer = observer
        self.copy_back = copy_back
        self.jobs: list[Job] = []  # in arrival order
        self.finished: list[Job] = []  # settled or dropped since the caller last looked (see take_finished)
        self.in_flight: _InFlight | None = None  # at most one batch whose rows are on their way

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    def take_finished(self) -> list[Job]:
        done, self.finished = self.finished, []
        return done

    def step(self) -> bool:
        """Drop cancelled jobs, run one batch, settle the jobs it completed; False when idle."""
        for job in [j for j in self.jobs if j.future.cancelled() or not (j.pending or j.running)]:
            self._remove(job)  # cancelled, or with nothing to compute at all (an empty request)
        waiting = [j for j in self.jobs if j.pending]  # work not launched yet
        if not waiting:
            self._land()  # only results on their way: take them
            return bool(self.jobs)
        first = min(waiting, key=lambda j: j.served)  # min keeps arrival order among equals
        if isinstance(first, RerankJob):
            self._land()
            self._run_rerank(first)
        else:
            self._run_embeds(self._embed_batch(first))
        return bool(self.jobs)

    def fail_all(self, error: Exception) -> None:
        self.in_flight = None
        for job in list(self.jobs):
            self._remove(job, error)

    # ------------------------------------------------------------------ one batch

    def _embed_batch(self, first: EmbedJob) -> list[tuple[EmbedJob, list[int]]]:
        """The least-served embedding job's sequences first, the room left filled by the jobs served
        as little (the requests that arrived together share batches). A newcomer beside a long job
        thus gets a batch of its own, which takes its own time, not a full batch's (seconds on a
        CPU); the long job goes on in the next step."""
        picks, used = [], 0
        peers = [j for j in self.jobs
                 if isinstance(j, EmbedJob) and j is not first and j.pending and j.served == first.served]
        for job in [first, *peers]:  # first is the least served: its peers are the jobs served as little
            taken = job.take(self.max_batch_tokens - used, alone=not picks)
            if taken:
                picks.append((job, taken))
                used += sum(job.lengths[i] for i in taken)
            if used >= self.max_batch_tokens:
                break
        return picks

    def _run_embeds(self, picks: list[tuple[EmbedJob, list[int]]]) -> None:
        """Launch one batch, then land the one launched before it (on a GPU they overlap)."""
        sequences = [job.sequences[i] for job, taken in picks for i in taken]
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                rows = self.copy_back(self.forward(sequences))  # [b, hidden], ready or on its way
        except Exception as exc:
            for job, _ in picks:
                self._remove(job, _failure(exc))
            self._land()
            return
        for job, taken in picks:
            job.served += sum(job.lengths[i] for i in taken)
            job.running += 1
        launched = _InFlight(picks, rows, sum(len(s) for s in sequences), started)
        self._land()
        if isinstance(rows, Tensor):
            self._scatter(launched, rows)
        else:
            self.in_flight = launched

    def _land(self) -> None:
        """Wait for the batch on its way, if any, and hand its rows to their jobs."""
        launched, self.in_flight = self.in_flight, None
        if launched is None:
            return
        try:
            rows = launched.rows.wait()
        except Exception as exc:  # a device error surfaces where its results are read
            for job, _ in launched.picks:
                if job in self.jobs:
                    self._remove(job, _failure(exc))
            return
        self._scatter(launched, rows)

    def _scatter(self, launched: _InFlight, rows: Tensor) -> None:
        self.observer.batch_done(rows.shape[0], launched.tokens, time.perf_counter() - launched.started)
        row = 0
        for job, taken in launched.picks:
            job.running -= 1
            if job in self.jobs:  # not cancelled or failed meanwhile
                job.store(taken, rows[row:row + len(taken)])
                if not job.pending and not job.running:
                    self._remove(job)
            row += len(taken)

    def _run_rerank(self, job: RerankJob) -> None:
        started = time.perf_counter()
        scorer: RerankBatches = job.scorer  # type: ignore[assignment]
        try:
            with torch.inference_mode():
                if not job.started:  # the first batch also computes the shared prefix
                    job.state, job.lengths = scorer.start(job.prepared)
                    job.started = True
                taken = job.take(self.max_batch_tokens, alone=True)
                scores = scorer.score(job.state, taken)
        except Exception as exc:
            self._remove(job, _failure(exc))
            return
        tokens = sum(job.lengths[i] for i in taken)
        self.observer.batch_done(len(taken), tokens, time.perf_counter() - started)
        for index, score in zip(taken, scores, strict=True):
            job.scores[index] = score
        job.served += tokens
        if not job.pending:
            self._remove(job)

    def _remove(self, job: Job, error: Exception | None = None) -> None:
        self.jobs.remove(job)
        if not job.future.cancelled():
            _settle(job, error)
        self.finished.append(job)


def run_jobs(jobs: Sequence[Job], forward: Forward | None, max_batch_tokens: int) -> None:
    """Run `jobs` to completion on this thread (the single-caller path of Embedder and Reranker;
    `forward` may be None where only rerank jobs run)."""
    scheduler = Scheduler(forward, max_batch_tokens)  # type: ignore[arg-type]
    for job in jobs:
        scheduler.add(job)
    while scheduler.step():
        pass
