"""Engine: the models behind one worker, for callers that serve many clients at once.

The synchronous `Embedder` / `Reranker` are the engine for one caller. `Engine` puts them behind
an `EngineWorker`, so that concurrent callers (the HTTP server, pipelines) get batched together:
each request is prepared (checked, tokenized) on a helper thread, overlapping the model's work on
the worker thread, and each `await` returns exactly the caller's own results. The server, the
CLI and the pipelines use these public methods only.

    engine = Engine.load(EngineOptions(ModelOptions("Qwen/Qwen3-Embedding-0.6B"), reranker=None))
    engine.start()
    out = await engine.embed(["some text"], dimensions=256)   # Embeddings(vectors [1, 256], token_counts)
    engine.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError, NotFoundError
from .embedder import Embedder
from .info import ModelInfo, TokenSpan
from .jobs import BatchObserver, EmbedJob
from .model_thread import ModelThread
from .options import EngineOptions, QueueLimits
from .reranker import Reranker
from .worker import EngineWorker

__all__ = ["Embeddings", "Engine", "Scores"]


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # [n, d] float32
    token_counts: list[int]  # tokens the model saw per input (EOS included for Qwen3)


@dataclass(frozen=True)
class Scores:
    scores: list[float]  # one per document, in input order
    tokens: int  # tokens the model saw for the whole request


class Engine:
    def __init__(self, embedder: Embedder, reranker: Reranker | None = None,
                 limits: QueueLimits | None = None, observer: BatchObserver | None = None,
                 thread: ModelThread | None = None) -> None:
        """`thread`: the ModelThread the models were loaded on (`Engine.load` does so); the worker
        runs them there."""
        self._embedder = embedder
        self._reranker = reranker
        self._thread = thread or ModelThread()
        self._worker = EngineWorker(embedder.forward, limits or QueueLimits(max_batch_tokens=embedder.max_batch_tokens),
                                    observer, self._thread)

    @classmethod
    def load(cls, options: EngineOptions, observer: BatchObserver | None = None) -> "Engine":
        if options.max_queued_requests < 1 or options.max_queued_tokens < (options.models.max_batch_tokens or 1):
            raise ConfigurationError("the queue must hold at least one request and one full batch of tokens")
        if not 1 <= options.max_request_tokens <= options.max_queued_tokens:
            raise ConfigurationError(f"max_request_tokens ({options.max_request_tokens}) must be from 1 to "
                                     f"max_queued_tokens ({options.max_queued_tokens}): a larger one could never run")
        thread = ModelThread()  # the models are loaded on the thread that will run them (engine/model_thread.py)
        try:
            embedder = thread.run(lambda: Embedder(options.models))
            reranker = (thread.run(lambda: Reranker(options.models.with_model(options.reranker), embedder=embedder))
                        if options.reranker else None)  # auto may fall back to the embedder
        except BaseException:
            thread.close()  # nothing will run on it
            raise
        return cls(embedder, reranker, options.limits(embedder.max_batch_tokens), observer, thread)

    # ------------------------------------------------------------------ lifecycle and state

    def start(self) -> None:
        """Warm the models up (compiling their fused kernels where enabled), then take work."""
        self._thread.run(self._embedder.warm_up)
        if self._reranker is not None:
            self._thread.run(self._reranker.warm_up)
        self._worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued (up to `timeout` seconds), then stop taking work."""
        self._worker.stop(timeout)

    def set_observer(self, observer: BatchObserver) -> None:
        """Who hears of each batch the model ran (the server's metrics)."""
        self._worker.observer = observer

    @property
    def alive(self) -> bool:
        return self._worker.alive

    @property
    def limits(self) -> QueueLimits:
        return self._worker.limits

    @property
    def queued_requests(self) -> int:
        return self._worker.queued_requests

    @property
    def queued_tokens(self) -> int:
        return self._worker.queued_tokens

    @property
    def embedding_info(self) -> ModelInfo:
        return self._embedder.info

    @property
    def reranker_info(self) -> ModelInfo | None:
        return self._reranker.info if self._reranker else None

    # ------------------------------------------------------------------ tokens (no model work, no queue)

    def tokenize(self, texts: Sequence[str], *, query: bool = False, instruction: str | None = None,
                 truncate: bool = True) -> list[list[int]]:
        """The exact token ids of each input as the embedding model sees them (query prompt included)."""
        return self._embedder.tokenize(texts, query=query, instruction=instruction, truncate=truncate)

    def token_spans(self, texts: Sequence[str], *, query: bool = False,
                    add_special_tokens: bool = True) -> list[list[TokenSpan]]:
        """Each input's tokens with their character spans, under the same per-request token limit as
        model work (the answer holds an object per token: unbounded, it would be unbounded memory)."""
        if sum(len(text) for text in texts) > self.limits.max_request_tokens:  # a token covers >= 1 character
            self.limits.check_request(sum(len(ids) for ids in self._embedder.tokenize(texts, query=query)))
        return self._embedder.token_spans(texts, query=query, add_special_tokens=add_special_tokens)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._embedder.token_offsets(text)

    # ------------------------------------------------------------------ model work, through the queue

    async def embed(self, texts: Sequence[str], *, query: bool = False, instruction: str | None = None,
                    dimensions: int | None = None, normalize: bool = True, truncate: bool = True) -> Embeddings:
        """Vectors [n, d] for the texts; cancelling the awaiting task drops the work if still queued."""
        prepared = await asyncio.to_thread(self._embedder.prepare, texts, query=query, instruction=instruction,
                                           dimensions=dimensions, normalize=normalize, truncate=truncate)
        # finished (sliced, normalised) on the worker thread too: torch's parallel work stays on one thread
        job = EmbedJob(prepared.token_lists, finish=lambda pooled: self._embedder.finish(prepared, pooled))
        vectors = await asyncio.wrap_future(self._worker.submit(job))  # [n, d]
        return Embeddings(vectors, prepared.token_counts)

    async def rerank(self, query: str, documents: Sequence[str], *, instruction: str | None = None,
                     truncate: bool = True) -> Scores:
        reranker = self._require_reranker()
        prepared = await asyncio.to_thread(reranker.tokenize, query, documents, instruction=instruction,
                                           truncate=truncate)
        scores = await asyncio.wrap_future(self._worker.submit(reranker.job(prepared)))
        return Scores(list(scores), prepared.tokens)

    def _require_reranker(self) -> Reranker:
        if self._reranker is None:
            raise NotFoundError("this server has no reranker: start it with --reranker MODEL (or auto)")
        return self._reranker
