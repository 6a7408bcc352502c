"""The engine: the one API that the CLI, the server and the pipelines use.

    Embedder, Reranker   one caller, synchronous (the Python API)
    Engine               many callers, async, batched together on one worker thread
    ModelOptions         which model, where, in what precision (every entry point takes it)

Everything else in this package (backends, jobs, the worker, batching) is internal.
"""

from .backend import ModelInfo, TokenSpan
from .device import COMPILE_MODES, cpu_has_fast_bf16
from .embedder import Embedder, PreparedEmbedding, similarity
from .engine import Embeddings, Engine, Scores
from .inputs import check_dimensions, check_text, check_top_n
from .jobs import BatchObserver
from .options import (
    CPU_BATCH_TOKENS,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_REQUEST_TOKENS,
    GPU_BATCH_TOKENS,
    SPECIAL_TOKEN_MODES,
    EngineOptions,
    ModelOptions,
    QueueLimits,
)
from .reranker import PreparedRerank, Reranker, RerankResult, rank_scores

__all__ = ["Embedder", "Reranker", "RerankResult", "similarity", "Engine", "EngineOptions", "ModelOptions",
           "QueueLimits", "ModelInfo", "TokenSpan", "Embeddings", "Scores", "PreparedEmbedding", "PreparedRerank",
           "BatchObserver", "check_dimensions", "check_text", "check_top_n", "rank_scores",
           "DEFAULT_MAX_BATCH_TOKENS", "DEFAULT_MAX_REQUEST_TOKENS", "COMPILE_MODES", "SPECIAL_TOKEN_MODES",
           "CPU_BATCH_TOKENS", "GPU_BATCH_TOKENS",
           "cpu_has_fast_bf16"]
