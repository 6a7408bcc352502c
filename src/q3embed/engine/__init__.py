"""The engine: the one API that the CLI, the server and the pipelines use.

    Embedder, Reranker   one caller, synchronous (the Python API)
    Engine               many callers, async, batched together on one worker thread
    ModelOptions         which model, where, in what precision (every entry point takes it)

Everything else in this package (backends, jobs, the worker, batching) is internal.

The options are imported at once; everything that needs torch is imported on first use, so that
`q3embed --help`, argument errors and configuration checks answer without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from .options import (
    ATTENTION_MODES,
    COMPILE_MODES,
    CPU_BATCH_TOKENS,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_REQUEST_TOKENS,
    GPU_BATCH_TOKENS,
    GPU_MAX_BATCH_TOKENS,
    GPU_MIN_BATCH_TOKENS,
    QUANTIZE_MODES,
    SPECIAL_TOKEN_MODES,
    EngineOptions,
    ModelOptions,
    QueueLimits,
)

if TYPE_CHECKING:
    from .device import cpu_has_fast_bf16
    from .embedder import Embedder, PreparedEmbedding, similarity
    from .engine import Embeddings, Engine, Scores
    from .info import ModelInfo, TokenSpan
    from .inputs import check_dimensions, check_text, check_top_n
    from .jobs import BatchObserver
    from .reranker import PreparedRerank, Reranker, RerankResult, rank_scores

# The submodules behind the names that need torch, each imported when one of its names is first read.
_LAZY = {
    "info": ["ModelInfo", "TokenSpan"], "device": ["cpu_has_fast_bf16"],
    "embedder": ["Embedder", "PreparedEmbedding", "similarity"], "engine": ["Embeddings", "Engine", "Scores"],
    "inputs": ["check_dimensions", "check_text", "check_top_n"], "jobs": ["BatchObserver"],
    "reranker": ["PreparedRerank", "Reranker", "RerankResult", "rank_scores"],
}
__getattr__, _, _ = lazy_loader.attach(__name__, submod_attrs=_LAZY)

__all__ = ["Embedder", "Reranker", "RerankResult", "similarity", "Engine", "EngineOptions", "ModelOptions",
           "QueueLimits", "ModelInfo", "TokenSpan", "Embeddings", "Scores", "PreparedEmbedding", "PreparedRerank",
           "BatchObserver", "check_dimensions", "check_text", "check_top_n", "rank_scores",
           "DEFAULT_MAX_BATCH_TOKENS", "DEFAULT_MAX_REQUEST_TOKENS", "COMPILE_MODES", "SPECIAL_TOKEN_MODES",
           "CPU_BATCH_TOKENS", "GPU_BATCH_TOKENS", "GPU_MIN_BATCH_TOKENS", "GPU_MAX_BATCH_TOKENS", "ATTENTION_MODES",
           "QUANTIZE_MODES", "cpu_has_fast_bf16"]


def __dir__() -> list[str]:
    return sorted(__all__)
