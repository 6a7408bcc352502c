"""q3embed: Qwen3-Embedding and Qwen3-Reranker, exactly right and fast."""

from .engine import Embedder, ModelOptions, Reranker, RerankResult, similarity
from .errors import (
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

__version__ = "0.1.0"

__all__ = [
    "Embedder",
    "ModelOptions",
    "Reranker",
    "RerankResult",
    "similarity",
    "Q3EmbedError",
    "InputError",
    "ModelNotFoundError",
    "CheckpointError",
    "ConfigurationError",
    "NotFoundError",
    "ConflictError",
    "OverloadedError",
    "UnsupportedError",
    "RequestTooLargeError",
    "EngineStopped",
    "EngineFailure",
    "ClientDisconnected",
    "__version__",
]
