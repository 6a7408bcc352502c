"""q3embed: Qwen3-Embedding and Qwen3-Reranker, exactly right and fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

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

if TYPE_CHECKING:
    from .engine import Embedder, ModelOptions, Reranker, RerankResult, similarity

__version__ = "0.1.0"
# The engine's names are imported on first use: `import q3embed` (and the CLI's --help) stays fast,
# and torch loads only when a model does.
__getattr__, _, _ = lazy_loader.attach(
    __name__, submod_attrs={"engine": ["Embedder", "ModelOptions", "Reranker", "RerankResult", "similarity"]})

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


def __dir__() -> list[str]:
    return sorted(__all__)
