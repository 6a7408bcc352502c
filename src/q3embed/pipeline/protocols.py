"""What the pipeline needs from the models, as protocols.

`Embedder` and `Reranker` satisfy them. The HTTP server, which batches the requests of many
clients through its engine, passes adapters with the same methods (server/engine_adapters.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..engine import ModelInfo

__all__ = ["TextEncoder", "RelevanceScorer"]


class TextEncoder(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def encode(self, texts: str | Sequence[str], *, query: bool = False, instruction: str | None = None,
               dimensions: int | None = None) -> np.ndarray:
        """Unit-length float32 vectors [N, d] ([d] for one string)."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


class RelevanceScorer(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def score(self, query: str, documents: str | Sequence[str], *, instruction: str | None = None) -> list[float]: ...
