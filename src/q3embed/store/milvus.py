"""Collections in Milvus through pymilvus: Milvus Lite for a file URI, a cluster for http(s)://.

Milvus Lite runs embedded with the same client API as a Milvus cluster, so scaling out is a
change of URI. Every collection is created with Strong consistency: a search that follows an
insert sees it. One row per chunk; the document's metadata and content hash ride on every row.
Collection records (model, dimensions, chunking) live in a property of the Milvus collection.

Milvus has no transactions: replacing a document deletes its rows, then inserts the new ones, each
in one request (a crash in between leaves the document absent, and a re-ingest adds it back).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, ConflictError, InputError, NotFoundError
from .faiss_index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from .filters import Filter, to_milvus
from .names import MAX_DOCUMENT_ID_BYTES, check_collection_name
from .protocol import CollectionCounts, CollectionInfo, DocumentRecord, StoredChunk, StoredDocument, StoredHit

__all__ = ["MilvusStore", "PREFIX", "milvus_name"]

PREFIX = "q3e_"  # only collections with this prefix are ours on a shared cluster
INFO_PROPERTY = "q3embed.collection"  # collection property holding the CollectionInfo JSON
MAX_TEXT_BYTES = 65_535  # Milvus VARCHAR limit
MAX_METADATA_BYTES = 65_536
MAX_TOP_K = 16_384
_IN_BATCH = 256  # ids per `doc_id in [...]` expression
_INSERT_ROWS = 512  # rows per insert request; a document's rows never straddle two requests
_FIELDS = ["doc_id", "chunk", "char_start", "char_end", "tokens", "text", "doc_hash", "meta"]


def milvus_name(name: str) -> str:
    """Milvus names allow letters, digits and _ only; '-' becomes '_' (a clash is caught at create)."""
    return PREFIX + check_collection_name(name).replace("-", "_")


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _in(field: str, values: Sequence[str]) -> str:
    return f"{field} in [{', '.join(_literal(v) for v in values)}]"


class MilvusStore:
    kind = "milvus"

    def __init__(self, uri: str, *, token: str | None = None) -> None:
        from pymilvus import MilvusClient  # heavy import: only for users of this store
        from pymilvus.exceptions import MilvusException

        self._error = MilvusException
        self.location = uri
        if "://" not in uri:
            path = Path(uri).expanduser()
            if path.suffix != ".db":
                raise ConfigurationError(f"a Milvus Lite URI is a file path ending in .db, got {uri!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        try:
            self.client = MilvusClient(uri=uri, token=token or "")
        except Exception as exc:  # pymilvus raises many types; all mean "cannot reach it"
            raise ConfigurationError(f"cannot open Milvus at {self.location}: {exc}") from None
        self._infos: dict[str, CollectionInfo] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------ collections

    def _describe(self, physical: str) -> CollectionInfo | None:
        record = (self.client.describe_collection(physical).get("properties") or {}).get(INFO_PROPERTY, "")
        try:
            return CollectionInfo.from_json(record)
        except ConflictError:
            return None

    def create_collection(self, info: CollectionInfo) -> CollectionInfo:
        from pymilvus import DataType, MilvusClient

        physical = milvus_name(info.name)
        with self._lock:
            if self.client.has_collection(physical):
                existing = self._describe(physical)
                other = f" (as {existing.name!r})" if existing and existing.name != info.name else ""
                raise ConflictError(f"collection {info.name!r} already exists in Milvus{other}")
            info = CollectionInfo(**{**info.__dict__, "store": self.kind})
            schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dimensions)
            schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_DOCUMENT_ID_BYTES * 4)
            for name in ("chunk", "char_start", "char_end", "tokens"):
                schema.add_field(name, DataType.INT64)
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
            schema.add_field("doc_hash", DataType.VARCHAR, max_length=128)
            schema.add_field("meta", DataType.JSON)
            index = self.client.prepare_index_params()
            if info.index == "hnsw":
                index.add_index("vector", index_type="HNSW", metric_type="IP",
                                params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
            else:
                index.add_index("vector", index_type="FLAT", metric_type="IP")
            self.client.create_collection(physical, schema=schema, index_params=index,
                                          consistency_level="Strong", properties={INFO_PROPERTY: info.to_json()})
            self._infos[info.name] = info
        return info

    def collection_names(self) -> list[str]:
        names = []
        for physical in self.client.list_collections():
            if physical.startswith(PREFIX):
                info = self._describe(physical)
                if info is not None:
                    names.append(info.name)
        return sorted(names)

    def collection_info(self, name: str) -> CollectionInfo:
        physical = milvus_name(name)
        with self._lock:
            if name in self._infos:
                return self._infos[name]
            if not self.client.has_collection(physical):
                raise NotFoundError(f"collection {name!r} does not exist")
            info = self._describe(physical)
            if info is None or info.name != name:
                raise NotFoundError(f"collection {name!r} does not exist")
            # A collection made by another process (or before a restart) may be released: searches
            # and queries need it loaded. Loading a loaded collection is a no-op.
            self.client.load_collection(physical)
            self._infos[name] = info
            return info

    def drop_collection(self, name: str) -> None:
        self.collection_info(name)
        with self._lock:
            self.client.drop_collection(milvus_name(name))
            self._infos.pop(name, None)

    def _physical(self, name: str) -> str:
        self.collection_info(name)  # NotFoundError for unknown names
        return milvus_name(name)

    def _count(self, physical: str, expr: str) -> int:
        rows = self.client.query(physical, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def counts(self, name: str) -> CollectionCounts:
        physical = self._physical(name)
        return CollectionCounts(self._count(physical, "chunk == 0"), self._count(physical, ""))

    # ------------------------------------------------------------ documents

    def document_hashes(self, name: str, ids: Sequence[str]) -> dict[str, str]:
        physical, out = self._physical(name), {}
        ids = list(dict.fromkeys(ids))
        for first in range(0, len(ids), _IN_BATCH):
            expr = f"chunk == 0 and {_in('doc_id', ids[first:first + _IN_BATCH])}"
            for row in self.client.query(physical, filter=expr, output_fields=["doc_id", "doc_hash"]):
                out[row["doc_id"]] = row["doc_hash"]
        return out

    def write(self, name: str, documents: Sequence[DocumentRecord]) -> None:
        physical = self._physical(name)
        dimensions = self.collection_info(name).dimensions
        groups = [_rows(doc, dimensions) for doc in documents]
        ids = list(dict.fromkeys(doc.id for doc in documents))
        with self._lock:
            for first in range(0, len(ids), _IN_BATCH):
                self.client.delete(physical, filter=_in("doc_id", ids[first:first + _IN_BATCH]))
            batch: list[dict[str, Any]] = []
            for rows in groups:
                if batch and len(batch) + len(rows) > _INSERT_ROWS:
                    self.client.insert(physical, batch)
                    batch = []
                batch.extend(rows)
            if batch:
                self.client.insert(physical, batch)

    def delete(self, name: str, ids: Sequence[str]) -> list[str]:
        existing = self.document_hashes(name, ids)
        physical = milvus_name(name)
        found = [i for i in dict.fromkeys(ids) if i in existing]
        with self._lock:
            for first in range(0, len(found), _IN_BATCH):
                self.client.delete(physical, filter=_in("doc_id", found[first:first + _IN_BATCH]))
        return found

    def get_document(self, name: str, doc_id: str) -> StoredDocument | None:
        rows = self.client.query(self._physical(name), filter=f"doc_id == {_literal(doc_id)}", output_fields=_FIELDS)
        if not rows:
            return None
        rows.sort(key=lambda r: r["chunk"])
        chunks = tuple(StoredChunk(r["chunk"], r["text"], r["char_start"], r["char_end"], r["tokens"]) for r in rows)
        return StoredDocument(doc_id, rows[0]["doc_hash"], dict(rows[0]["meta"] or {}), chunks)

    def search(self, name: str, vector: np.ndarray, top_k: int, where: Filter | None = None) -> list[StoredHit]:
        physical = self._physical(name)
        if top_k > MAX_TOP_K:
            raise InputError(f"top_k is at most {MAX_TOP_K} with Milvus, got {top_k}")
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.collection_info(name).index == "hnsw":
            params["params"] = {"ef": max(HNSW_EF_SEARCH, top_k)}
        results = self.client.search(physical, data=[np.asarray(vector, np.float32).tolist()], limit=top_k,
                                     filter=to_milvus(where) if where else "", output_fields=_FIELDS,
                                     search_params=params)
        hits = []
        for hit in results[0] if results else []:
            e = hit["entity"]
            hits.append(StoredHit(e["doc_id"], e["chunk"], e["text"], e["char_start"], e["char_end"],
                                  dict(e["meta"] or {}), float(hit["distance"])))
        return hits

    def flush(self, name: str) -> None:
        """Nothing to do: Milvus persists its own segments."""

    def close(self) -> None:
        self.client.close()


def _rows(doc: DocumentRecord, dimensions: int) -> list[dict[str, Any]]:
    meta = json.dumps(doc.metadata, ensure_ascii=False)
    if len(meta.encode()) > MAX_METADATA_BYTES:
        raise InputError(f"document {doc.id!r}: metadata over {MAX_METADATA_BYTES} bytes of JSON")
    rows = []
    for c in doc.chunks:
        if np.shape(c.vector) != (dimensions,):
            raise InputError(f"document {doc.id!r} chunk {c.index}: vector of shape {np.shape(c.vector)}, "
                             f"the collection holds {dimensions} dimensions")
        if len(c.text.encode()) > MAX_TEXT_BYTES:
            raise InputError(f"document {doc.id!r} chunk {c.index} is over {MAX_TEXT_BYTES} bytes, the most "
                             "Milvus stores in a text field: use a smaller chunk size")
        rows.append({"vector": np.asarray(c.vector, np.float32).tolist(), "doc_id": doc.id, "chunk": c.index,
                     "char_start": c.start, "char_end": c.end, "tokens": c.tokens, "text": c.text,
                     "doc_hash": doc.content_hash, "meta": doc.metadata})
    return rows
