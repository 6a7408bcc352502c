"""Units of model work and the one place that batches and scatters them.

An `EmbedJob` is one request's token id lists; `run_embed_jobs` plans the sequences of several
jobs together into packed batches under the token budget, runs each batch once, and hands every
job exactly its own rows. The engine's worker thread calls it for each window of queued jobs;
`Embedder.encode` calls it for its single job on the caller's thread. Either way a batch that
fails fails only the jobs it held, and every job's future completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from ..errors import EngineFailure, Q3EmbedError
from .batch import plan_batches

__all__ = ["BatchObserver", "EmbedJob", "Forward", "NULL_OBSERVER", "RerankJob", "run_embed_jobs",
           "run_rerank_job"]

log = logging.getLogger("q3embed")

Forward = Callable[[Sequence[Sequence[int]]], Tensor]  # one batch of token id lists -> [b, hidden]


class BatchObserver(Protocol):
    """Receives what the model did (the server's metrics implement it)."""

    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None: ...


class _NullObserver:
    def batch_done(self, sequences: int, tokens: int, seconds: float) -> None:
        pass


NULL_OBSERVER: BatchObserver = _NullObserver()


@dataclass(eq=False)
class EmbedJob:
    """Token id lists of one request -> pooled fp32 vectors [n, hidden] on the CPU, in the same order."""

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


def _failure(exc: Exception) -> Exception:
    """User errors raised inside the job (e.g. an over-long input) pass through unchanged."""
    if isinstance(exc, Q3EmbedError):
        return exc
    log.error("model failure in a batch: %s: %s", type(exc).__name__, exc)
    failure = EngineFailure(f"the model failed on this batch: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure


def run_rerank_job(job: RerankJob, observer: BatchObserver = NULL_OBSERVER) -> None:
    started = time.perf_counter()
    try:
        result = job.run()
    except Exception as exc:
        job.future.set_exception(_failure(exc))
        return
    observer.batch_done(1, job.tokens, time.perf_counter() - started)
    job.future.set_result(result)


def run_embed_jobs(jobs: Sequence[EmbedJob], forward: Forward, max_batch_tokens: int,
                   observer: BatchObserver = NULL_OBSERVER) -> None:
    """All sequences of `jobs` planned together; each future gets its own rows [n, hidden] or the
    failure of a batch it had a sequence in."""
    owners = [(j, i) for j, job in enumerate(jobs) for i in range(len(job.sequences))]
    sequences = [jobs[j].sequences[i] for j, i in owners]
    outputs = [torch.empty(len(job.sequences), 0) for job in jobs]  # widened on the first batch
    failed: dict[int, Exception] = {}
    for batch in plan_batches([len(s) for s in sequences], max_batch_tokens):
        batch = [k for k in batch if owners[k][0] not in failed]  # a failed job's other batches are skipped
        if not batch:
            continue
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                pooled = forward([sequences[k] for k in batch]).to("cpu", torch.float32)  # [b, hidden]
        except Exception as exc:
            for k in batch:
                failed.setdefault(owners[k][0], _failure(exc))
            continue
        observer.batch_done(len(batch), sum(len(sequences[k]) for k in batch), time.perf_counter() - started)
        for row, k in enumerate(batch):
            j, i = owners[k]
            if outputs[j].shape[1] != pooled.shape[1]:
                outputs[j] = torch.empty(len(jobs[j].sequences), pooled.shape[1])
            outputs[j][i] = pooled[row]
    for j, job in enumerate(jobs):
        if j in failed:
            job.future.set_exception(failed[j])
        else:
            job.future.set_result(outputs[j])
