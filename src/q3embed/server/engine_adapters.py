"""Collections on the server's running Engine: its models, batched with every other request.

The HTTP server owns one `Engine` whose worker thread batches the requests of all clients.
Giving Collections an Embedder of its own would run forward passes beside that worker, outside
its queue limits; these adapters (pipeline.protocols' TextEncoder and RelevanceScorer) send the
work through the engine instead:

    cols = Collections(store, EngineEncoder(engine, loop), EngineScorer(engine, loop))
    result = await asyncio.to_thread(cols.search, "docs", query, top_k=5)

Collections methods block, so call them from a worker thread (as above), never on the event loop
(`loop` is the loop the engine's coroutines run on; calling from it would deadlock, and raises).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np

from ..engine import Engine, ModelInfo
from ..errors import ConfigurationError

__all__ = ["EngineEncoder", "EngineScorer"]

T = TypeVar("T")


def _run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise RuntimeError("Collections blocks: call it through asyncio.to_thread, not on the event loop")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


class EngineEncoder:
    """TextEncoder over Engine.embed (a TextEncoder for q3embed.pipeline.Collections)."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine, self.loop = engine, loop

    @property
    def info(self) -> ModelInfo:
        return self.engine.embedding_info

    def encode(self, texts: str | Sequence[str], *, query: bool = False, instruction: str | None = None,
               dimensions: int | None = None) -> np.ndarray:
        items = [texts] if isinstance(texts, str) else list(texts)
        out = _run(self.loop, self.engine.embed(items, query=query, instruction=instruction, dimensions=dimensions))
        return out.vectors[0] if isinstance(texts, str) else out.vectors

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.engine.token_offsets(text)  # tokenizer only: no model work, no queue


class EngineScorer:
    """RelevanceScorer over Engine.rerank."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        if engine.reranker_info is None:
            raise ConfigurationError("the engine has no reranker loaded")
        self.engine, self.loop = engine, loop

    @property
    def info(self) -> ModelInfo:
        return self.engine.reranker_info  # type: ignore[return-value]

    def score(self, query: str, documents: str | Sequence[str], *, instruction: str | None = None) -> list[float]:
        items = [documents] if isinstance(documents, str) else list(documents)
        return list(_run(self.loop, self.engine.rerank(query, items, instruction=instruction)).scores)
