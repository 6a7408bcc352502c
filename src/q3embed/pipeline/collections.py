"""Collections: the one Python API for the retrieval stack; the CLI and the HTTP server call it.

    with Collections.open(StoreConfig(), embedder=Embedder(...), reranker=Reranker(...)) as cols:
        cols.create("docs", chunk_size=256)
        cols.upsert("docs", [Document("a", "The capital of China is Beijing.", {"lang": "en"})])
        result = cols.search("docs", "capital of China?", top_k=5, filter={"lang": "en"}, rerank=True)

Errors (all q3embed.errors): InputError for a bad name, filter, document or size; NotFoundError for
an unknown collection or document; ConflictError for a collection that exists, or one built with
another model or dimensions than the loaded one; ConfigurationError when a model the call needs
(embedder, reranker) was not given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..engine import check_dimensions
from ..errors import ConfigurationError, ConflictError, InputError, NotFoundError
from ..store import StoreConfig, open_store
from ..store.filters import parse_filter
from ..store.names import check_collection_name, check_document_id
from ..store.protocol import INDEX_KINDS, CollectionInfo, StoredDocument, VectorStore
from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, ChunkingOptions
from .ingest import UpsertReport, as_document, upsert_documents
from .model_check import check_model, content_tokens
from .protocols import RelevanceScorer, TextEncoder
from .search import SearchResult, run_search

__all__ = ["Collections", "CollectionDescription", "DeleteReport"]


@dataclass(frozen=True)
class CollectionDescription:
    info: CollectionInfo  # name, model, dimensions, chunk_size, chunk_overlap, index, metric, store, created
    documents: int
    chunks: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.info), "documents": self.documents, "chunks": self.chunks}


@dataclass(frozen=True)
class DeleteReport:
    deleted: list[str]  # ids that were stored and are now gone
    missing: list[str]  # ids that were not stored


class Collections:
    """Create, list, describe, drop; upsert, delete and search documents. Safe to share between threads.

    `embedder` is needed to create, upsert and search; `reranker` only for search(rerank=True).
    """

    def __init__(self, store: VectorStore, embedder: TextEncoder | None = None,
                 reranker: RelevanceScorer | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.reranker = reranker

    @classmethod
    def open(cls, config: StoreConfig | None = None, embedder: TextEncoder | None = None,
             reranker: RelevanceScorer | None = None) -> "Collections":
        return cls(open_store(config or StoreConfig()), embedder, reranker)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Collections":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ------------------------------------------------------------ collections

    def create(self, name: str, *, chunk_size: int | None = None, chunk_overlap: int | None = None,
               index: str = "flat", dimensions: int | None = None, exist_ok: bool = False) -> CollectionDescription:
        """A new collection for the loaded embedding model.

        chunk_size / chunk_overlap in tokens (default 512 / 64, the size capped at the model's length);
        index "flat" (exact) or "hnsw"; dimensions: a Matryoshka size below the model's (default: all).
        exist_ok: return the existing collection instead of ConflictError, as long as the options
        given (not None) agree with it and it was built with the loaded model.
        """
        check_collection_name(name)
        if index not in INDEX_KINDS:
            raise InputError(f"index must be one of {', '.join(INDEX_KINDS)}, got {index!r}")
        if exist_ok:
            try:
                return self._existing(name, chunk_size, chunk_overlap, index, dimensions)
            except NotFoundError:
                pass
        if self.embedder is None:
            raise ConfigurationError("creating a collection needs the embedding model it will be built with")
        served = self.embedder.info
        limit = content_tokens(self.embedder)
        size = chunk_size if chunk_size is not None else min(DEFAULT_CHUNK_SIZE, limit)
        overlap = chunk_overlap if chunk_overlap is not None else min(DEFAULT_CHUNK_OVERLAP, size // 2)
        ChunkingOptions(size, overlap).check(limit)
        dims = check_dimensions(dimensions, served.dimensions) or served.dimensions
        info = CollectionInfo(name=name, model=served.name, dimensions=dims, chunk_size=size,
                              chunk_overlap=overlap, index=index)
        return CollectionDescription(self.store.create_collection(info), 0, 0)

    def _existing(self, name: str, chunk_size: int | None, chunk_overlap: int | None, index: str,
                  dimensions: int | None) -> CollectionDescription:
        info = self.store.collection_info(name)
        asked = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "dimensions": dimensions}
        if index != "flat":
            asked["index"] = index
        differ = [f"{k} {getattr(info, k)} (asked {v})" for k, v in asked.items()
                  if v is not None and getattr(info, k) != v]
        if differ:
            raise ConflictError(f"collection {name!r} exists with {', '.join(differ)}: drop it first or "
                                "use another name")
        if self.embedder is not None:
            check_model(info, self.embedder)
        return self.describe(name)

    def list(self) -> list[CollectionDescription]:
        return [self.describe(name) for name in self.store.collection_names()]

    def describe(self, name: str) -> CollectionDescription:
        info = self.store.collection_info(check_collection_name(name))
        counts = self.store.counts(name)
        return CollectionDescription(info, counts.documents, counts.chunks)

    def drop(self, name: str) -> None:
        self.store.drop_collection(check_collection_name(name))

    # ------------------------------------------------------------ documents

    def _ready(self, name: str) -> CollectionInfo:
        info = self.store.collection_info(check_collection_name(name))
        check_model(info, self.embedder)
        return info

    def upsert(self, name: str, documents: Iterable[Any], *, skip_invalid: bool = False,
               progress: Callable[[UpsertReport], None] | None = None) -> UpsertReport:
        """Insert or replace documents: Document(id, text, metadata) or {"id", "text", "metadata"} mappings.

        An unchanged document (same text and metadata) is skipped; a changed one replaces all its
        chunks. A list is checked whole before anything is written (InputError names the bad one);
        an iterator (a file being read) is checked as it goes. skip_invalid lists bad documents in
        the report instead of raising.
        """
        info = self._ready(name)
        if isinstance(documents, (str, bytes, Mapping)):
            raise InputError("documents must be a list of documents, not a single value")
        if isinstance(documents, Sequence) and not skip_invalid:
            documents = [as_document(d, f"document {i}") for i, d in enumerate(documents)]
        return upsert_documents(self.store, info, self.embedder, documents,  # type: ignore[arg-type]
                                skip_invalid=skip_invalid, progress=progress)

    def delete(self, name: str, ids: Sequence[str]) -> DeleteReport:
        self.store.collection_info(check_collection_name(name))
        if isinstance(ids, str) or not isinstance(ids, Sequence) or not ids:
            raise InputError("ids must be a non-empty list of document ids")
        wanted = list(dict.fromkeys(check_document_id(i) for i in ids))
        deleted = self.store.delete(name, wanted)
        gone = set(deleted)
        self.store.flush(name)
        return DeleteReport(deleted, [i for i in wanted if i not in gone])

    def get(self, name: str, doc_id: str) -> StoredDocument:
        """A stored document: its hash, metadata and chunks (text and offsets)."""
        self.store.collection_info(check_collection_name(name))
        found = self.store.get_document(name, check_document_id(doc_id))
        if found is None:
            raise NotFoundError(f"document {doc_id!r} is not in collection {name!r}")
        return found

    # ------------------------------------------------------------ search

    def search(self, name: str, query: str, *, top_k: int = 10, filter: str | Mapping[str, Any] | None = None,
               rerank: bool = False, candidates: int | None = None,
               instruction: str | None = None) -> SearchResult:
        """The top_k chunks for `query`, best first.

        filter: metadata filter (JSON text or object; see q3embed.store.filters). rerank: the
        reranker reorders the best `candidates` chunks (default: 4 x top_k, at most 100).
        instruction: the task for the query prompt (and the reranker); default: web search.
        """
        info = self._ready(name)
        where = parse_filter(filter)
        return run_search(self.store, info, self.embedder, query, top_k=top_k,  # type: ignore[arg-type]
                          where=where, reranker=self.reranker, rerank=rerank, candidates=candidates,
                          instruction=instruction)
