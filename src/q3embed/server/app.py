"""The FastAPI application: routes of each API family, errors rendered per family, ops endpoints.

    app = create_app(Engine.load(EngineOptions()), ServerConfig())
    uvicorn.run(app)

Every answer that is not a success goes through server/http_errors.py: exceptions by one table
(error -> ErrorKind -> status), in the error shape of the request's API family.

The app owns the engine's worker: it starts it when the server starts, and stops it (after the
queued work is done) when the server shuts down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..engine import Engine
from ..errors import ClientDisconnected, Q3EmbedError
from . import (
    routes_collections,
    routes_ollama,
    routes_openai,
    routes_rerank,
    routes_tei,
    routes_weaviate,
)
from .config import ServerConfig
from .http_errors import ErrorKind, error_kind, error_response, kind_of_status
from .middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    ShutdownMiddleware,
)
from .prometheus import CONTENT_TYPE, Metrics
from .routes_ui import add_playground
from .state import AppState

__all__ = ["create_app"]

log = logging.getLogger("q3embed")

OPENAPI_VERSION = "3.0.3"


def create_app(engine: Engine, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    metrics = Metrics()
    engine.set_observer(metrics)
    metrics.watch_queue(lambda: engine.queued_requests, lambda: engine.queued_tokens)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        state: AppState = app.state.q3embed
        state.collections = await asyncio.to_thread(_open_collections, engine, config, asyncio.get_running_loop())
        try:
            yield
        finally:
            await asyncio.to_thread(state.collections.close)
            await asyncio.to_thread(engine.stop, config.graceful_timeout_s)  # the loop still answers meanwhile

    # OpenAPI 3.0.x: the Swagger UI served offline (swagger-ui-bundle's 4.15) reads no 3.1 document
    # and would show a blank page; the schemas FastAPI writes render under 3.0 as they are.
    app = FastAPI(title="q3embed", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Qwen3-Embedding and Qwen3-Reranker over the OpenAI, Cohere/Jina, TEI and "
                  "Ollama APIs, and Weaviate's inference-container contracts.")
    app.openapi_version = OPENAPI_VERSION
    app.state.q3embed = AppState(engine, config, metrics)
    for routes in (routes_openai, routes_rerank, routes_tei, routes_ollama, routes_weaviate, routes_collections):
        app.include_router(routes.router)
    _add_ops_routes(app)
    add_playground(app)
    _add_error_handlers(app)
    # Outermost last: metrics see every answer, auth runs before the body is read.
    app.add_middleware(ShutdownMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s)
    app.add_middleware(ApiKeyMiddleware, keys=config.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _open_collections(engine: Engine, config: ServerConfig, loop: asyncio.AbstractEventLoop) -> Any:
    """Collections whose model work goes through this server's engine queue."""
    from pathlib import Path

    from ..pipeline import Collections
    from ..store import StoreConfig
    from .engine_adapters import EngineEncoder, EngineScorer

    store = StoreConfig(directory=Path(config.store_dir) if config.store_dir else None,
                        milvus_uri=config.milvus_uri, milvus_token=config.milvus_token)
    scorer = EngineScorer(engine, loop) if engine.reranker_info is not None else None
    return Collections.open(store, EngineEncoder(engine, loop), scorer)


def _add_ops_routes(app: FastAPI) -> None:
    import swagger_ui_bundle  # the Swagger UI files, shipped in a wheel: the docs need no CDN

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="q3embed API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    @app.get("/health", tags=["Operations"])
    async def health(request: Request) -> JSONResponse:
        """200 while the engine's worker runs; 503 once it has stopped or died."""
        engine: Engine = request.app.state.q3embed.engine
        if engine.alive:
            return JSONResponse({"status": "ok"})
        return error_response("/health", ErrorKind.UNAVAILABLE, "the engine is not running")

    @app.get("/metrics", tags=["Operations"])
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.q3embed.metrics.render(), media_type=CONTENT_TYPE)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Q3EmbedError)
    async def known(request: Request, exc: Q3EmbedError) -> Response:
        kind = error_kind(exc)
        if kind is ErrorKind.OVERLOADED:
            request.app.state.q3embed.metrics.rejected.inc()
        if isinstance(exc, ClientDisconnected):  # nobody reads it: the metrics and logs do
            return Response(status_code=kind.status)
        return error_response(request.url.path, kind, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request.url.path, ErrorKind.UNPROCESSABLE, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(request.url.path, kind_of_status(exc.status_code), str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request.url.path, ErrorKind.BACKEND, f"internal error: {type(exc).__name__}: {exc}")
