"""Every error q3embed raises on purpose; each one is something a user can fix.

    Q3EmbedError
    ├── InputError            bad texts or arguments (empty, wrong type, too long, bad dimensions)
    ├── ModelNotFoundError    a model id or path that cannot be found or downloaded
    ├── CheckpointError       a model directory that exists but cannot be loaded
    ├── ConfigurationError    an option value that makes no sense (dtype, device, max length)
    ├── NotFoundError         a named thing (collection, document, served model) that does not exist
    ├── ConflictError         a request that contradicts existing state (collection exists, built
    │                         with another model or dimensions)
    └── OverloadedError       the engine's queue is full; retry later
"""

from __future__ import annotations

__all__ = [
    "Q3EmbedError",
    "InputError",
    "ModelNotFoundError",
    "CheckpointError",
    "ConfigurationError",
    "NotFoundError",
    "ConflictError",
    "OverloadedError",
]


class Q3EmbedError(Exception):
    """Base class: the message alone tells the user what went wrong and how to fix it."""


class InputError(Q3EmbedError, ValueError):
    """The texts or arguments given to encode/score are not usable."""


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


class OverloadedError(Q3EmbedError):
    """The engine cannot take more work now; the caller should retry after a short wait."""
