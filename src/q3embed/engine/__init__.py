"""The engine: the one API that the CLI, the server and the pipelines use."""

from .embedder import Embedder, similarity
from .reranker import Reranker, RerankResult

__all__ = ["Embedder", "Reranker", "RerankResult", "similarity"]
