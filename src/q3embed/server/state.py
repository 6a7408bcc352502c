"""What every route needs: the engine, the configuration, the metrics, and two shared rules
(which model names a request may name, and dropping the work of a client that left)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from ..engine import Engine, ModelInfo
from ..errors import ClientDisconnected, InputError, NotFoundError
from .config import ServerConfig
from .prometheus import Metrics

__all__ = ["AppState", "ServedModel", "State", "app_state", "as_list", "texts_of"]

T = TypeVar("T")


@dataclass(frozen=True)
class ServedModel:
    """One model as the listing routes show it (/v1/models, /api/tags, /api/ps)."""

    info: ModelInfo
    names: list[str]  # the id first, then its aliases
    kinds: tuple[str, ...]  # "embedding", "reranker", or both
    rerank_by: str | None = None  # the reranker's method: "qwen3-reranker" or "cosine-similarity"


@dataclass
class AppState:
    engine: Engine
    config: ServerConfig
    metrics: Metrics
    collections: Any = None  # pipeline.Collections, opened when the server starts

    def model_names(self, info: ModelInfo) -> list[str]:
        """The names clients see and may pass, the id first: the model's own name (a hub id, or the
        directory name of a local path: a server never shows its file system), the names that chose
        it (`auto`, and the model `auto` stands for, also when the offline fallback serves in its
        place), and the configured --served-model-name aliases."""
        names = [_public_name(info), *info.aliases, *self.config.served_model_names]
        return list(dict.fromkeys(n for n in names if n))

    def served_models(self) -> list[ServedModel]:
        """Each model once: the cosine-similarity reranker is the embedding model itself, so it
        is one entry that does both."""
        embedding = self.engine.embedding_info
        reranker = self.engine.reranker_info
        if reranker is not None and reranker.kind == "cosine-similarity" and reranker.path == embedding.path:
            names = list(dict.fromkeys([*self.model_names(embedding), *self.model_names(reranker)]))
            return [ServedModel(embedding, names, ("embedding", "reranker"), "cosine-similarity")]
        served = [ServedModel(embedding, self.model_names(embedding), ("embedding",))]
        if reranker is not None:
            served.append(ServedModel(reranker, self.model_names(reranker), ("reranker",), reranker.kind))
        return served

    def embedding_model(self, requested: str | None) -> str:
        return self._check_model(requested, self.engine.embedding_info, "embedding")

    def reranker_model(self, requested: str | None) -> str:
        info = self.engine.reranker_info
        if info is None:
            raise NotFoundError("this server has no reranker: start it with --reranker MODEL (or auto)")
        return self._check_model(requested, info, "reranker")

    def _check_model(self, requested: str | None, info: ModelInfo, what: str) -> str:
        names = self.model_names(info)
        if requested in (None, "") or requested in names or requested == info.name:  # the path as launched
            return names[0]
        raise NotFoundError(f"model {requested!r} is not served here; the {what} model is "
                            + " or ".join(repr(n) for n in names))

    def check_count(self, count: int, limit: int, what: str) -> None:
        if count > limit:
            raise InputError(f"{count} {what} in one request; the limit is {limit}: split the request")

    async def until_disconnected(self, request: Request, work: Awaitable[T]) -> T:
        """Await `work`; if the client disconnects first, cancel it (queued work is then dropped)."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_disconnect(request))
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server gave up on this request (shutdown): so does the engine
            task.cancel()
            raise
        finally:
            watcher.cancel()
        if task in done:
            return task.result()
        task.cancel()
        self.metrics.disconnects.inc()
        raise ClientDisconnected()


def _public_name(info: ModelInfo) -> str:
    """A model given as a local path is known by its directory (or file) name."""
    given = Path(info.name).expanduser()
    if given.is_absolute() or info.name.startswith((".", "~")) or given.exists():
        return given.name
    return info.name


async def _disconnect(request: Request) -> None:
    # The body has been read already, so the next message on the channel is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def app_state(request: Request) -> AppState:
    return request.app.state.q3embed


State = Annotated[AppState, Depends(app_state)]  # a route parameter `state: State` receives the AppState


def as_list(inputs: str | list[str]) -> list[str]:
    """The API families accept one string or a list of them; the engine takes a list."""
    return [inputs] if isinstance(inputs, str) else inputs


def texts_of(value: str | Sequence[object]) -> list[str] | str:
    """Strings as given; token-id arrays get a 400 that says what to do instead."""
    if isinstance(value, str):
        return value
    if any(isinstance(item, (int, list)) for item in value):
        raise InputError(
            "token-id arrays are not accepted: this server tokenizes text itself, with the exact "
            "rules the model needs. Send strings. LangChain's OpenAIEmbeddings sends token ids "
            "by default: pass check_embedding_ctx_length=False.")
    return list(value)  # type: ignore[arg-type]
