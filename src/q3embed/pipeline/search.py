"""Search: embed the query (with its instruction), take the store's top-k, optionally rerank.

With rerank, the store returns `candidates` chunks (more than top_k), the reranker scores each
against the query, and the best top_k by rerank score are kept. Every hit carries both scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigurationError, InputError
from ..store.filters import Filter
from ..store.protocol import CollectionInfo, VectorStore
from .protocols import RelevanceScorer, TextEncoder

__all__ = ["SearchHit", "SearchResult", "SearchTimings", "run_search", "check_search_sizes", "MAX_TOP_K",
           "default_candidates"]

MAX_TOP_K = 1000


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1 = best
    document_id: str
    chunk_index: int
    text: str
    start: int  # character offsets of the chunk in its document
    end: int
    metadata: dict[str, Any]
    score: float  # the score the ranking used: rerank_score when reranked, else vector_score
    vector_score: float  # cosine similarity of query and chunk
    rerank_score: float | None  # the reranker's relevance (P(yes) for Qwen3-Reranker), None without rerank


@dataclass(frozen=True)
class SearchTimings:
    embed_ms: float
    search_ms: float
    rerank_ms: float


@dataclass(frozen=True)
class SearchResult:
    collection: str
    query: str
    hits: list[SearchHit]
    reranked: bool
    candidates: int  # chunks the vector stage returned
    timings: SearchTimings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_candidates(top_k: int) -> int:
    """How many chunks a rerank looks at by default: a few times top_k, at most 100 (reranking is costly)."""
    return max(top_k, min(4 * top_k, 100))


def check_search_sizes(top_k: Any, candidates: Any) -> None:
    for label, value in (("top_k", top_k), ("candidates", candidates)):
        if value is None and label == "candidates":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
            raise InputError(f"{label} must be an integer from 1 to {MAX_TOP_K}, got {value!r}")


def run_search(store: VectorStore, info: CollectionInfo, encoder: TextEncoder, query: str, *, top_k: int,
               where: Filter | None, reranker: RelevanceScorer | None = None, rerank: bool = False,
               candidates: int | None = None, instruction: str | None = None) -> SearchResult:
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty")
    check_search_sizes(top_k, candidates)
    if rerank and reranker is None:
        raise ConfigurationError("rerank was asked for but no reranker is loaded")
    t0 = time.perf_counter()
    size = info.dimensions if info.dimensions != encoder.info.dimensions else None
    vector = encoder.encode(query, query=True, instruction=instruction, dimensions=size)
    t1 = time.perf_counter()
    want = max(top_k, candidates or default_candidates(top_k)) if rerank else top_k
    found = store.search(info.name, vector, want, where)
    t2 = time.perf_counter()
    rerank_scores: list[float | None] = [None] * len(found)
    order = list(range(len(found)))
    if rerank and found:
        scored = reranker.score(query, [h.text for h in found], instruction=instruction)  # type: ignore[union-attr]
        rerank_scores = list(scored)
        order = sorted(order, key=lambda i: -scored[i])  # stable: ties keep the vector order
    t3 = time.perf_counter()
    hits = []
    for rank, i in enumerate(order[:top_k], start=1):
        h, rr = found[i], rerank_scores[i]
        hits.append(SearchHit(rank, h.document_id, h.chunk_index, h.text, h.start, h.end, h.metadata,
                              rr if rr is not None else h.score, h.score, rr))
    timings = SearchTimings(1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (t3 - t2))
    return SearchResult(info.name, query, hits, bool(rerank), len(found), timings)
