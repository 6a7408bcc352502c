"""Every HTTP status the server answers with comes from here, in two steps (as TEI does):
error -> ErrorKind -> status, and the error body each API family's clients expect.

    OpenAI, Cohere/Jina (/v1/...)   {"error": {"message", "type", "param", "code"}}
    TEI (/embed, /rerank, ...)      {"error": "...", "error_type": "Validation"}
    Ollama (/api/...)               {"error": "..."}
    Weaviate (/weaviate/...)        {"error": "..."}
"""

from __future__ import annotations

from enum import Enum

from starlette.responses import JSONResponse

from ..errors import (
    CheckpointError,
    ClientDisconnected,
    ConfigurationError,
    ConflictError,
    EngineFailure,
    EngineStopped,
    InputError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    Q3EmbedError,
    RequestTooLargeError,
    UnsupportedError,
)

__all__ = ["ErrorKind", "error_kind", "kind_of_status", "error_response", "RETRY_AFTER_S", "TEI_PATHS"]

RETRY_AFTER_S = 1
TEI_PATHS = frozenset({"/", "/embed", "/rerank", "/tokenize", "/info", "/similarity"})


class ErrorKind(Enum):
    """(status, OpenAI error type, TEI error_type) of each kind of failure."""

    VALIDATION = (400, "invalid_request_error", "Validation")
    UNAUTHORIZED = (401, "authentication_error", "Unauthorized")
    NOT_FOUND = (404, "invalid_request_error", "NotFound")
    METHOD_NOT_ALLOWED = (405, "invalid_request_error", "Validation")
    REQUEST_TIMEOUT = (408, "invalid_request_error", "Validation")
    CONFLICT = (409, "invalid_request_error", "Validation")
    TOO_LARGE = (413, "invalid_request_error", "Validation")
    UNPROCESSABLE = (422, "invalid_request_error", "Validation")
    OVERLOADED = (429, "rate_limit_error", "Overloaded")
    CLIENT_CLOSED = (499, "invalid_request_error", "Validation")  # nginx's "client closed request": for logs
    BACKEND = (500, "server_error", "Backend")
    UNSUPPORTED = (501, "invalid_request_error", "Unsupported")
    UNAVAILABLE = (503, "server_error", "Unhealthy")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def openai_type(self) -> str:
        return self.value[1]

    @property
    def tei_type(self) -> str:
        return self.value[2]


# Most specific first: ModelNotFoundError is also a FileNotFoundError, InputError a ValueError.
# CheckpointError is the operator's to fix (the server's model files), not the client's.
_TABLE: tuple[tuple[type[Q3EmbedError], ErrorKind], ...] = (
    (OverloadedError, ErrorKind.OVERLOADED),
    (NotFoundError, ErrorKind.NOT_FOUND),
    (ModelNotFoundError, ErrorKind.NOT_FOUND),
    (ConflictError, ErrorKind.CONFLICT),
    (RequestTooLargeError, ErrorKind.TOO_LARGE),
    (InputError, ErrorKind.VALIDATION),
    (ConfigurationError, ErrorKind.VALIDATION),
    (UnsupportedError, ErrorKind.UNSUPPORTED),
    (ClientDisconnected, ErrorKind.CLIENT_CLOSED),
    (EngineStopped, ErrorKind.UNAVAILABLE),
    (EngineFailure, ErrorKind.BACKEND),
    (CheckpointError, ErrorKind.BACKEND),
    (Q3EmbedError, ErrorKind.VALIDATION),
)
_BY_STATUS = {kind.status: kind for kind in ErrorKind}


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind of any exception: ours by the table, anything else is the backend's fault."""
    return next((kind for cls, kind in _TABLE if isinstance(exc, cls)), ErrorKind.BACKEND)


def kind_of_status(status: int) -> ErrorKind:
    """For the statuses the framework itself raises (routing's 404 and 405)."""
    return _BY_STATUS.get(status, ErrorKind.VALIDATION if status < 500 else ErrorKind.BACKEND)


def error_response(path: str, kind: ErrorKind, message: str) -> JSONResponse:
    """The error body in the shape of the API family that `path` belongs to."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if kind is ErrorKind.OVERLOADED else None
    if path.startswith(("/api/", "/weaviate/")):
        body: dict = {"error": message}
    elif path in TEI_PATHS:
        body = {"error": message, "error_type": kind.tei_type}
    else:
        body = {"error": {"message": message, "type": kind.openai_type, "param": None, "code": None}}
    return JSONResponse(body, status_code=kind.status, headers=headers)
