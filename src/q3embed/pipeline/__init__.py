"""The retrieval pipeline: read documents, chunk, embed, store, search and rerank.

`Collections` is the one entry point (the CLI and the HTTP server use it); the modules below it
are its parts: readers (files -> documents), chunking, ingest (upsert), search.
"""

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
