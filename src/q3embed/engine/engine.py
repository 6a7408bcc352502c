"""Engine: the models behind one worker, for callers that serve many clients at once.

The synchronous `Embedder` / `Reranker` are the engine for one caller. `Engine` puts them behind
an `EngineWorker`, so that concurrent callers (the HTTP server, pipelines) get batched together:
tokenization runs on the caller's thread (overlapping the model's work on the worker thread),
and each `await` returns exactly the caller's own results.

    engine = Engine.load(EngineOptions(model="Qwen/Qwen3-Embedding-0.6B", reranker=None))
    engine.start()
    out = await engine.embed(["some text"], dimensions=256)   # Embeddings(vectors [1, 256], token_counts)
    engine.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError, InputError
from ..model.heads import matryoshka
from .backends import ModelInfo
from .device import resolve_device, resolve_dtype
from .embedder import DEFAULT_MAX_BATCH_TOKENS, Embedder
from .inputs import check_dimensions, check_text, check_texts
from .reranker import Reranker
from .worker import BatchObserver, EmbedJob, EngineWorker, QueueLimits, RerankJob

__all__ = ["Embeddings", "Engine", "EngineOptions", "Scores"]


@dataclass(frozen=True)
class EngineOptions:
    """Everything that decides which models load and how work is queued."""

    model: str = "auto"
    reranker: str | None = "auto"  # None: serve no reranker
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = None
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_queued_requests: int = 256
    max_queued_tokens: int = 262_144

    @property
    def limits(self) -> QueueLimits:
        return QueueLimits(self.max_batch_tokens, self.max_queued_requests, self.max_queued_tokens)


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
                 limits: QueueLimits | None = None, observer: BatchObserver | None = None) -> None:
        self.embedder = embedder
        self.reranker = reranker
        self.worker = EngineWorker(embedder.backend.embed,
                                   limits or QueueLimits(max_batch_tokens=embedder.max_batch_tokens), observer)

    @classmethod
    def load(cls, options: EngineOptions, observer: BatchObserver | None = None) -> "Engine":
        if options.max_queued_requests < 1 or options.max_queued_tokens < options.max_batch_tokens:
            raise ConfigurationError("the queue must hold at least one request and one full batch of tokens")
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device)
        common = {"device": device, "dtype": dtype, "max_length": options.max_length,
                  "max_batch_tokens": options.max_batch_tokens}
        embedder = Embedder(options.model, **common)
        reranker = Reranker(options.reranker, **common) if options.reranker else None
        return cls(embedder, reranker, options.limits, observer)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Warm the models up (compiling their fused kernels where enabled), then take work."""
        self.embedder.warm_up()
        if self.reranker is not None:
            self.reranker.warm_up()
        self.worker.start()

    def stop(self, timeout: float | None = None) -> None:
        self.worker.stop(timeout)

    @property
    def alive(self) -> bool:
        return self.worker.alive

    @property
    def embedding_info(self) -> ModelInfo:
        return self.embedder.info

    @property
    def reranker_info(self) -> ModelInfo | None:
        return self.reranker.info if self.reranker else None

    # ------------------------------------------------------------------ work

    def tokenize(self, texts: Sequence[str], *, query: bool = False, instruction: str | None = None,
                 truncate: bool = True) -> list[list[int]]:
        """The exact token ids of each input as the embedding model sees them (query prompt included)."""
        items, _ = check_texts(texts)
        if instruction is not None:
            check_text(instruction, "instruction")
            query = True
        backend = self.embedder.backend
        prompts = [backend.query_text(t, instruction) for t in items] if query else items
        return backend.tokenize(prompts, truncate=truncate)

    async def embed(self, texts: Sequence[str], *, query: bool = False, instruction: str | None = None,
                    dimensions: int | None = None, normalize: bool = True, truncate: bool = True) -> Embeddings:
        """Vectors [n, d] for the texts; cancelling the awaiting task drops the work if still queued."""
        size = check_dimensions(dimensions, self.embedder.dimensions)
        token_lists = await asyncio.to_thread(self.tokenize, texts, query=query, instruction=instruction,
                                              truncate=truncate)
        pooled = await asyncio.wrap_future(self.worker.submit(EmbedJob(token_lists)))  # [n, hidden]
        vectors = matryoshka(pooled, size, normalize).numpy()
        return Embeddings(vectors, [len(ids) for ids in token_lists])

    async def rerank(self, query: str, documents: Sequence[str], *, instruction: str | None = None,
                     truncate: bool = True) -> Scores:
        reranker = self._require_reranker()
        token_lists = await asyncio.to_thread(reranker.tokenize, query, documents, instruction=instruction,
                                              truncate=truncate)
        tokens = sum(len(ids) for ids in token_lists)
        job = RerankJob(run=lambda: reranker.score_tokens(token_lists), tokens=tokens)
        scores = await asyncio.wrap_future(self.worker.submit(job))
        return Scores(list(scores), tokens)  # type: ignore[call-overload]

    def _require_reranker(self) -> Reranker:
        if self.reranker is None:
            raise InputError("no reranker is loaded: start the server with --reranker MODEL (or auto)")
        return self.reranker

