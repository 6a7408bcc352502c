"""The retrieval pipeline: read documents, chunk, embed, store, search and rerank.

`Collections` is the one entry point (the CLI and the HTTP server use it); the modules below it
are its parts: readers (files -> documents), chunking, ingest (upsert), search.

Its names are imported on first use (lazy_loader), so importing one module of this package
does not import the others (and torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from .chunking import Chunk, ChunkingOptions, chunk_text
    from .collections import CollectionDescription, Collections, DeleteReport
    from .ingest import UpsertReport
    from .protocols import RelevanceScorer, TextEncoder
    from .readers import Document, ReaderOptions, Skipped, count_source, read_source
    from .search import SearchHit, SearchResult, SearchTimings

__all__ = [
    "Collections", "CollectionDescription", "DeleteReport", "UpsertReport", "SearchResult", "SearchHit",
    "SearchTimings", "Document", "Skipped", "ReaderOptions", "read_source", "count_source", "Chunk",
    "ChunkingOptions", "chunk_text", "TextEncoder", "RelevanceScorer",
]

_LAZY = {
    "chunking": ["Chunk", "ChunkingOptions", "chunk_text"],
    "collections": ["CollectionDescription", "Collections", "DeleteReport"],
    "ingest": ["UpsertReport"],
    "protocols": ["RelevanceScorer", "TextEncoder"],
    "readers": ["Document", "ReaderOptions", "Skipped", "count_source", "read_source"],
    "search": ["SearchHit", "SearchResult", "SearchTimings"],
}
__getattr__, _, _ = lazy_loader.attach(__name__, submod_attrs=_LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)

