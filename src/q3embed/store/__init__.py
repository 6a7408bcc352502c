"""Vector stores behind one protocol: the embedded FAISS + SQLite store, and Milvus.

    store = open_store(StoreConfig())                          # ~/.local/share/q3embed/collections
    store = open_store(StoreConfig(milvus_uri="./milvus.db"))  # Milvus Lite, in one file
    store = open_store(StoreConfig(milvus_uri="http://milvus:19530"))  # a Milvus cluster
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .filters import Filter, parse_filter
from .names import COLLECTION_NAME_RULE, check_collection_name, check_document_id
from .protocol import (
    INDEX_KINDS,
    ChunkRecord,
    CollectionCounts,
    CollectionInfo,
    DocumentRecord,
    StoredChunk,
    StoredDocument,
    StoredHit,
    VectorStore,
)

__all__ = [
    "StoreConfig", "open_store", "default_store_dir", "VectorStore", "CollectionInfo", "CollectionCounts",
    "ChunkRecord", "DocumentRecord", "StoredChunk", "StoredDocument", "StoredHit", "Filter", "parse_filter",
    "INDEX_KINDS", "COLLECTION_NAME_RULE", "check_collection_name", "check_document_id",
]


def default_store_dir() -> Path:
    """$XDG_DATA_HOME/q3embed/collections, else ~/.local/share/q3embed/collections (read at call time)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "q3embed" / "collections"


@dataclass(frozen=True)
class StoreConfig:
    """Where collections live: a directory (embedded store), or a Milvus URI when one is given."""

    directory: Path | None = None  # None: default_store_dir()
    milvus_uri: str | None = None  # a file path ending in .db (Milvus Lite) or http(s)://host:19530
    milvus_token: str | None = None  # "user:password" or an API key, for a secured cluster
    save_interval_s: float = 60.0  # embedded: how often a long ingest rewrites the index file


def open_store(config: StoreConfig) -> VectorStore:
    if config.milvus_uri:
        from .milvus import MilvusStore

        return MilvusStore(config.milvus_uri, token=config.milvus_token)
    from .embedded import EmbeddedStore

    return EmbeddedStore(config.directory or default_store_dir(), save_interval_s=config.save_interval_s)
