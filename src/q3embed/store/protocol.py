"""The one contract every vector store meets, and the records that cross it.

A store holds named collections. A collection holds documents; a document is stored as chunks,
each with its text, its character span in the document, and a unit-length float32 vector. Writes
are per document: a document's chunks replace its old ones as a whole, so a reader never sees
half of a document (the embedded store guarantees this even across a kill -9; Milvus, which has
no transactions, deletes the old rows and inserts the new ones in one request each).

Scores are cosine similarities (vectors are unit length, the index uses inner product).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np

from ..errors import ConflictError
from .filters import Filter

__all__ = [
    "INDEX_KINDS", "CollectionInfo", "ChunkRecord", "DocumentRecord", "StoredChunk", "StoredDocument",
    "StoredHit", "CollectionCounts", "VectorStore",
]

INDEX_KINDS = ("flat", "hnsw")  # flat: exact search; hnsw: approximate graph search
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection was built with: recorded at creation, checked whenever it is used."""

    name: str
    model: str  # the embedding model's name as the engine reports it
    dimensions: int  # vector size: the model's, or a Matryoshka size below it
    chunk_size: int  # tokens per chunk
    chunk_overlap: int  # tokens shared by neighbouring chunks
    index: str = "flat"
    metric: str = "cosine"
    store: str = ""  # "embedded" or "milvus"; set by the store that holds it
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CollectionInfo":
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            info = cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise ConflictError(f"unreadable collection record: {exc}") from None
        if info.format > FORMAT_VERSION:
            raise ConflictError(f"collection {info.name!r} was written by a newer q3embed (format {info.format})")
        return info


@dataclass(frozen=True)
class ChunkRecord:
    index: int  # position of the chunk in its document, from 0
    text: str  # exactly document_text[start:end]
    start: int  # character offsets in the document text
    end: int
    tokens: int  # tokens of the chunk as the embedding model counts them
    vector: np.ndarray  # float32 [dimensions], unit length


@dataclass(frozen=True)
class DocumentRecord:
    id: str
    content_hash: str  # of text + metadata: an unchanged document is not embedded again
    metadata: dict[str, Any]
    chunks: tuple[ChunkRecord, ...]


@dataclass(frozen=True)
class StoredChunk:
    index: int
    text: str
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class StoredDocument:
    id: str
    content_hash: str
    metadata: dict[str, Any]
    chunks: tuple[StoredChunk, ...]


@dataclass(frozen=True)
class StoredHit:
    document_id: str
    chunk_index: int
    text: str
    start: int
    end: int
    metadata: dict[str, Any]
    score: float  # cosine similarity of the query and chunk vectors


@dataclass(frozen=True)
class CollectionCounts:
    documents: int
    chunks: int


class VectorStore(Protocol):
    """Collections of chunked, embedded documents. Every method names its collection.

    Errors: NotFoundError for an unknown collection, ConflictError for creating one that exists,
    InputError for values the store cannot hold. Methods are safe to call from several threads.
    """

    kind: str  # "embedded" or "milvus"
    location: str  # directory or URI, for messages

    def create_collection(self, info: CollectionInfo) -> CollectionInfo: ...

    def collection_names(self) -> list[str]: ...

    def collection_info(self, name: str) -> CollectionInfo: ...

    def drop_collection(self, name: str) -> None: ...

    def counts(self, name: str) -> CollectionCounts: ...

    def document_hashes(self, name: str, ids: Sequence[str]) -> dict[str, str]:
        """content_hash of each of `ids` that is stored (absent ids are left out)."""
        ...

    def write(self, name: str, documents: Sequence[DocumentRecord]) -> None:
        """Insert or replace whole documents (all chunks of an id are replaced)."""
        ...

    def delete(self, name: str, ids: Sequence[str]) -> list[str]:
        """Remove documents; returns the ids that existed."""
        ...

    def get_document(self, name: str, doc_id: str) -> StoredDocument | None: ...

    def search(self, name: str, vector: np.ndarray, top_k: int, where: Filter | None = None) -> list[StoredHit]:
        """The top_k chunks by cosine similarity (best first) among those matching `where`."""
        ...

    def flush(self, name: str) -> None:
        """Make recent writes cheap to reopen (the embedded store saves its index); optional work."""
        ...

    def close(self) -> None: ...
