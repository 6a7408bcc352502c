"""q3embed: Qwen3-Embedding and Qwen3-Reranker, exactly right and fast."""

from .engine import Embedder, Reranker, RerankResult, similarity
from .errors import (
    CheckpointError,
    ConfigurationError,
    ConflictError,
    InputError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    Q3EmbedError,
)

__version__ = "0.1.0"

__all__ = [
    "Embedder",
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
    "__version__",
]
