"""Every error q3embed raises on purpose: one base class, drawn here once.

    Q3EmbedError
    │  the caller's mistakes (the message says how to fix them)
    ├── InputError            bad texts or arguments (empty, wrong type, too long, bad dimensions)
    │   └── RequestTooLargeError  one request over a size limit (tokens, items, bytes): split it
    ├── ModelNotFoundError    a model id or path that cannot be found or downloaded
    ├── CheckpointError       a model directory that exists but cannot be loaded
    ├── ConfigurationError    an option value that makes no sense (dtype, device, max length)
    ├── NotFoundError         a named thing (collection, document, served model) that does not exist
    ├── ConflictError         a request that contradicts existing state (collection exists, built
    │                         with another model or dimensions)
    ├── UnsupportedError      a feature this running service does not offer (collections off on
    │                         stateless replicas)
    │  the service's state (nothing is wrong with the request itself)
    ├── OverloadedError       the engine's queue is full; retry later
    ├── EngineStopped         the engine is stopped, shutting down or dead: it takes no more work
    ├── EngineFailure         the model raised while computing a batch; only that batch's requests fail
    └── ClientDisconnected    the HTTP client left before its answer was ready

The HTTP server maps each class to one status in one table (server/http_errors.py).
"""

from __future__ import annotations

__all__ = [
    "Q3EmbedError",
    "InputError",
    "RequestTooLargeError",
    "ModelNotFoundError",
    "CheckpointError",
    "ConfigurationError",
    "NotFoundError",
    "ConflictError",
    "UnsupportedError",
    "OverloadedError",
    "EngineStopped",
    "EngineFailure",
    "ClientDisconnected",
]


class Q3EmbedError(Exception):
    """Base class: the message alone tells what went wrong and, where the caller can, how to fix it."""


class InputError(Q3EmbedError, ValueError):
    """The texts or arguments given to encode/score are not usable."""


class RequestTooLargeError(InputError):
    """One request is over a size limit of the service (its message names the limit and its flag)."""


class ModelNotFoundError(Q3EmbedError, FileNotFoundError):
    """A model id or path that is neither on disk nor downloadable."""


class CheckpointError(Q3EmbedError):
    """A model directory whose files are missing, broken, or do not match the architecture."""


class ConfigurationError(Q3EmbedError, ValueError):
    """An option (dtype, device, max length, ...) with an unusable value."""


class NotFoundError(Q3EmbedError, LookupError):
    """A collection, document or served model name that does not exist."""


class ConflictError(Q3EmbedError):
    """The request contradicts what exists: a collection that already exists, or one built with another model."""


class UnsupportedError(Q3EmbedError):
    """The running service does not offer this feature (its configuration turned it off)."""


class OverloadedError(Q3EmbedError):
    """The engine cannot take more work now; the caller should retry after a short wait."""


class EngineStopped(Q3EmbedError):
    """The engine's worker is stopped, stopping or dead: it takes no more work."""


class EngineFailure(Q3EmbedError):
    """The model raised while computing a batch; only the requests of that batch fail."""


class ClientDisconnected(Q3EmbedError):
    """The client closed the connection before its answer was ready (its queued work is dropped)."""
