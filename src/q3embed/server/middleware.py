"""Pure ASGI middleware: API keys, body size, and per-request metrics.

Pure ASGI (not BaseHTTPMiddleware) so that the `http.disconnect` message still reaches the
handlers, which drop a departed client's queued work.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .http_errors import ErrorKind, error_response
from .prometheus import Metrics

__all__ = ["ApiKeyMiddleware", "BodyLimitMiddleware", "MetricsMiddleware", "ShutdownMiddleware", "OPEN_PATHS"]

# Reachable without a key: liveness probes (ours, and Weaviate's, which sends no key), the API docs
# and the playground page (static files; every API call they make carries the user's key).
OPEN_PATHS = frozenset({"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/ui"} | {
    f"/weaviate{task}/.well-known/{probe}" for task in ("", "/query", "/passage") for probe in ("live", "ready")})
OPEN_PREFIXES = ("/docs/static/", "/ui/static/")
# Open to GET only: the base URL's redirect to the playground (POST / is TEI's embed, keyed as any call).
OPEN_GET_PATHS = frozenset({"/"})


def _raw_header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return b""


def _header(scope: Scope, name: bytes) -> str:
    return _raw_header(scope, name).decode("latin-1")


class ApiKeyMiddleware:
    """`Authorization: Bearer KEY` (OpenAI, Cohere, TEI clients) or `X-API-Key: KEY`; else 401.

    Keys are compared as UTF-8 bytes with the header's bytes as sent (a client sends a non-ASCII
    key as UTF-8), in constant time."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [key.encode("utf-8") for key in keys]

    def _allowed(self, scope: Scope) -> bool:
        bearer = _raw_header(scope, b"authorization")
        given = bearer[7:] if bearer[:7].lower() == b"bearer " else _raw_header(scope, b"x-api-key")
        candidate = given.strip()
        # Compare with every key, without stopping at a match: the time taken says nothing.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or not self.keys or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
                or (path in OPEN_GET_PATHS and scope.get("method") in ("GET", "HEAD")) or self._allowed(scope)):
            await self.app(scope, receive, send)
            return
        response = error_response(path, ErrorKind.UNAUTHORIZED,
                                  "a valid API key is required: send 'Authorization: Bearer KEY'")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


class BodyLimitMiddleware:
    """Reads the body up to the limit, then replays it; one byte more is a 413 before any parsing,
    and a client that stops sending for `timeout_s` in the middle of its body gets a 408 (a slow
    client cannot hold a connection open forever)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                message = f"the request body did not arrive within {self.timeout_s:g} s (--body-timeout)"
                await error_response(scope.get("path", ""), ErrorKind.REQUEST_TIMEOUT, message)(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than the limit of {self.max_bytes} bytes"
        await error_response(scope.get("path", ""), ErrorKind.TOO_LARGE, message)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """The buffered body once, then the real channel (which later carries http.disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ShutdownMiddleware:
    """Past --graceful-timeout uvicorn cancels the requests still running: each gets a 503 in its
    API family's error shape (not a bare 500 and a traceback in the log)."""

    MESSAGE = "the server is shutting down and could not finish this request in time: retry it"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            if not started:  # the answer replaces the cancelled one; the task then ends normally
                await error_response(scope.get("path", ""), ErrorKind.UNAVAILABLE, self.MESSAGE)(scope, receive, send)


class MetricsMiddleware:
    """Counts every answer by route template (not raw path, which would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
