"""One table from error to HTTP status, and the error body each API family's clients expect.

    OpenAI, Cohere/Jina (/v1/...)   {"error": {"message", "type", "param", "code"}}
    TEI (/embed, /rerank, ...)      {"error": "...", "error_type": "Validation"}
    Ollama (/api/...)               {"error": "..."}
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse

from ..engine.worker import EngineFailure, EngineStopped
from ..errors import (
    CheckpointError,
    ConfigurationError,
    ConflictError,
    InputError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    Q3EmbedError,
)

__all__ = ["HTTPProblem", "ErrorKind", "error_kind", "error_response", "RETRY_AFTER_S"]

RETRY_AFTER_S = 1


class HTTPProblem(Exception):
    """An error the HTTP layer itself raises (auth, body size, unknown route) with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ErrorKind:
    status: int
    openai_type: str
    tei_type: str


_BY_STATUS = {
    400: ErrorKind(400, "invalid_request_error", "Validation"),
    401: ErrorKind(401, "authentication_error", "Unauthorized"),
    404: ErrorKind(404, "invalid_request_error", "NotFound"),
    405: ErrorKind(405, "invalid_request_error", "Validation"),
    409: ErrorKind(409, "invalid_request_error", "Validation"),
    413: ErrorKind(413, "invalid_request_error", "Validation"),
    422: ErrorKind(422, "invalid_request_error", "Validation"),
    429: ErrorKind(429, "rate_limit_error", "Overloaded"),
    500: ErrorKind(500, "server_error", "Backend"),
    503: ErrorKind(503, "server_error", "Unhealthy"),
}

# Most specific first: ModelNotFoundError is also a FileNotFoundError, InputError a ValueError.
_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (OverloadedError, 429),
    (NotFoundError, 404),
    (ModelNotFoundError, 404),
    (ConflictError, 409),
    (InputError, 400),
    (ConfigurationError, 400),
    (CheckpointError, 500),
    (EngineStopped, 503),
    (EngineFailure, 500),
    (Q3EmbedError, 400),
)


def error_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, HTTPProblem):
        return _BY_STATUS.get(exc.status, ErrorKind(exc.status, "invalid_request_error", "Validation"))
    status = next((code for kind, code in _TABLE if isinstance(exc, kind)), 500)
    return _BY_STATUS[status]


def error_response(path: str, status: int, message: str) -> JSONResponse:
    """The error body in the shape of the API family that `path` belongs to."""
    kind = _BY_STATUS.get(status, ErrorKind(status, "invalid_request_error", "Validation"))
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
    if path.startswith("/api/"):
        body: dict = {"error": message}
    elif path in ("/embed", "/rerank", "/tokenize", "/info"):
        body = {"error": message, "error_type": kind.tei_type}
    else:
        body = {"error": {"message": message, "type": kind.openai_type, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)
