"""The embedded store: one directory per collection, SQLite for the truth, FAISS for the search.

    ROOT/NAME/store.sqlite     documents, chunks, vectors (WAL; one transaction per document)
    ROOT/NAME/index.faiss      the FAISS index, a cache rebuilt or caught up from SQLite on open

Crash safety: a document is committed with all its chunks or not at all, and the index file is
replaced atomically and stamped with the SQLite version it reflects; on open an older index is
caught up from SQLite and a missing or foreign one rebuilt. Several processes may share a
collection (an ingest beside a server): each checks the version before a search and catches up.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConflictError, InputError, NotFoundError
from . import sqlite_db as sql
from .faiss_index import IndexStamp, VectorIndex
from .filters import Filter, to_sql
from .names import check_collection_name
from .protocol import CollectionCounts, CollectionInfo, DocumentRecord, StoredDocument, StoredHit

__all__ = ["EmbeddedStore"]

INDEX_FILE = "index.faiss"


class _Collection:
    """One open collection: its SQLite connection and FAISS index, guarded by one lock."""

    def __init__(self, directory: Path, save_interval_s: float) -> None:
        self.directory = directory
        self.db = sql.connect(directory)
        meta = sql.read_meta(self.db)
        if "info" not in meta or "uuid" not in meta:
            self.db.close()
            raise ConflictError(f"{directory} is not a q3embed collection (no collection record)")
        try:
            self.info = CollectionInfo.from_json(meta["info"])
        except ConflictError:
            self.db.close()
            raise
        self.uuid = meta["uuid"]
        self.lock = threading.RLock()
        self.save_interval_s = save_interval_s
        self.saved_version = -1
        self.saved_at = time.monotonic()
        self.last_sync = ""  # how the index was last brought up to date: loaded, caught-up, rebuilt
        self._index: VectorIndex | None = None  # loaded on first use: listing and counting need no index

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            self._index = self._load_index()
        return self._index

    # ------------------------------------------------------------ index upkeep

    def _fresh_stamp(self) -> IndexStamp:
        return IndexStamp(self.uuid, self.info.index, self.info.dimensions)

    def _load_index(self) -> VectorIndex:
        index = VectorIndex.load(self.directory / INDEX_FILE, self._fresh_stamp(), self._exact_vectors)
        if index is None:
            return self._rebuild()
        self.saved_version = index.stamp.version
        self._index, self.last_sync = index, "loaded"
        self._sync()
        live = self.counts().chunks
        if self.index.size != live:  # a bad stamp or a foreign file: trust SQLite
            return self._rebuild()
        return self.index

    def _exact_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sql.chunk_vectors(self.db, ids, self.info.dimensions)

    def _rebuild(self) -> VectorIndex:
        index = VectorIndex(self._fresh_stamp(), self._exact_vectors)
        index.stamp.version = sql.read_all_vectors(self.db, self.info.dimensions, index.add)
        self._index, self.last_sync, self.saved_version = index, "rebuilt", -1
        return index

    def _sync(self) -> None:
        """Bring the index up to SQLite's version (writes by other processes, or a crash)."""
        version, _ = sql.version_and_floor(self.db)
        if version == self.index.stamp.version:
            return
        changes = sql.changes_since(self.db, self.index.stamp.version, self.index.stamp.max_chunk_id,
                                    self.info.dimensions)
        if changes is None:
            self._rebuild()
            return
        self.index.remove(changes.removed)
        self.index.add(changes.added_ids, changes.added_vectors)
        self.index.stamp.version = changes.version
        self.last_sync = "caught-up"

    def save(self, force: bool = False) -> None:
        """Write the index file when it lags; without force only now and then (it can be large)."""
        if self._index is None:
            return
        stamp = self._index.stamp
        if stamp.version == self.saved_version:
            return
        due = time.monotonic() - self.saved_at >= self.save_interval_s
        if not (force or due):
            return
        if stamp.kind == "hnsw" and stamp.stale > max(1000, self.index.size // 5):
            self._rebuild()  # too many dead points in the graph: rebuilding beats searching around them
        self.index.save(self.directory / INDEX_FILE)
        self.saved_version, self.saved_at = self.index.stamp.version, time.monotonic()
        sql.prune_removed(self.db, self.saved_version)

    # ------------------------------------------------------------ reads and writes

    def counts(self) -> CollectionCounts:
        documents = self.db.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return CollectionCounts(documents, chunks)

    def write(self, doc: DocumentRecord) -> None:
        vectors = np.stack([c.vector for c in doc.chunks]).astype(np.float32) if doc.chunks else None
        with self.lock:
            self._sync()
            version, removed, added = sql.write_document(self.db, doc)
            if version != self.index.stamp.version + 1:  # another process wrote in between
                self._sync()
                return
            self.index.remove(np.array(removed, np.int64))
            if vectors is not None:
                self.index.add(np.array(added, np.int64), vectors)
            self.index.stamp.version = version

    def delete(self, ids: Sequence[str]) -> list[str]:
        with self.lock:
            self._sync()
            version, existed, removed = sql.delete_documents(self.db, ids)
            if version == self.index.stamp.version + 1:
                self.index.remove(np.array(removed, np.int64))
                self.index.stamp.version = version
            else:
                self._sync()
        return existed

    def search(self, vector: np.ndarray, top_k: int, where: Filter | None) -> list[StoredHit]:
        with self.lock:
            self._sync()
            if where is None:
                return self._search_all(vector, top_k)
            clause, params = to_sql(where, "d.metadata")
            # Documents first (few rows, metadata inline), then their chunk ids from the index on
            # chunks(doc_id): the chunk rows with their vector blobs are never read.
            allowed = np.array([r[0] for r in self.db.execute(
                "SELECT c.id FROM chunks c WHERE c.doc_id IN "
                f"(SELECT d.id FROM documents d WHERE {clause})", params)], np.int64)
            allowed = allowed[allowed <= self.index.stamp.max_chunk_id]  # newer than this search's snapshot
            if not len(allowed):
                return []
            scores, ids = self.index.search(vector, top_k, allowed)
            return self._hits(scores, ids, top_k)

    def _search_all(self, vector: np.ndarray, top_k: int) -> list[StoredHit]:
        """Ask for more when some ids are gone from SQLite (stale HNSW points, a concurrent delete)."""
        want = top_k + self.index.stamp.stale
        while True:
            scores, ids = self.index.search(vector, want)
            hits = self._hits(scores, ids, top_k)
            if len(hits) >= top_k or want >= self.index.index.ntotal:
                return hits
            want *= 2

    def _hits(self, scores: np.ndarray, ids: np.ndarray, top_k: int) -> list[StoredHit]:
        rows = sql.chunk_rows(self.db, ids.tolist())
        hits = []
        for score, chunk_id in zip(scores.tolist(), ids.tolist(), strict=True):
            row = rows.get(chunk_id)
            if row is not None:
                doc_id, idx, start, end, text, metadata = row
                hits.append(StoredHit(doc_id, idx, text, start, end, metadata, float(score)))
        return hits[:top_k]

    def close(self) -> None:
        with self.lock:
            try:
                if self._index is not None:
                    self._sync()
                    self.save(force=True)
            finally:
                self.db.close()


class EmbeddedStore:
    """FAISS + SQLite collections under one root directory (see the module docstring)."""

    kind = "embedded"

    def __init__(self, root: str | Path, *, save_interval_s: float = 60.0) -> None:
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the store directory {self.root}: {exc.strerror}") from None
        self.location = str(self.root)
        self.save_interval_s = save_interval_s
        self._open: dict[str, _Collection] = {}
        self._lock = threading.Lock()

    def _directory(self, name: str) -> Path:
        return self.root / check_collection_name(name)

    def _get(self, name: str) -> _Collection:
        directory = self._directory(name)
        with self._lock:
            handle = self._open.get(name)
            if handle is None:
                if not (directory / sql.DB_FILE).is_file():
                    raise NotFoundError(f"collection {name!r} does not exist")
                handle = self._open[name] = _Collection(directory, self.save_interval_s)
            return handle

    def create_collection(self, info: CollectionInfo) -> CollectionInfo:
        """Built in a hidden directory and renamed into place, so a half-made collection never shows."""
        target = self._directory(info.name)
        if target.exists():
            raise ConflictError(f"collection {info.name!r} already exists")
        info = CollectionInfo(**{**info.__dict__, "store": self.kind})
        building = self.root / f".{info.name}.creating-{uuid.uuid4().hex}"
        building.mkdir()
        try:
            db = sql.connect(building)
            try:
                sql.initialise(db, {"info": info.to_json(), "uuid": uuid.uuid4().hex})
            finally:
                db.close()
            os.rename(building, target)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
            if target.exists():
                raise ConflictError(f"collection {info.name!r} already exists") from None
            raise
        return info

    def collection_names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.startswith(".") and (p / sql.DB_FILE).is_file())

    def collection_info(self, name: str) -> CollectionInfo:
        return self._get(name).info

    def drop_collection(self, name: str) -> None:
        """Renamed away first, so the name is free at once even if the removal is interrupted."""
        directory = self._directory(name)
        with self._lock:
            handle = self._open.pop(name, None)
        if handle is not None:
            with handle.lock:
                handle.db.close()
        if not (directory / sql.DB_FILE).is_file():
            raise NotFoundError(f"collection {name!r} does not exist")
        trash = self.root / f".{name}.dropped-{uuid.uuid4().hex}"
        os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def counts(self, name: str) -> CollectionCounts:
        handle = self._get(name)
        with handle.lock:  # one connection per collection: its users take turns
            return handle.counts()

    def document_hashes(self, name: str, ids: Sequence[str]) -> dict[str, str]:
        handle = self._get(name)
        with handle.lock:
            return dict(sql.select_in(handle.db, "SELECT id, hash FROM documents WHERE id IN ({marks})", list(ids)))

    def write(self, name: str, documents: Sequence[DocumentRecord]) -> None:
        handle = self._get(name)
        for doc in documents:
            _check_vectors(doc, handle.info.dimensions)
        for doc in documents:
            handle.write(doc)

    def delete(self, name: str, ids: Sequence[str]) -> list[str]:
        return self._get(name).delete(ids)

    def get_document(self, name: str, doc_id: str) -> StoredDocument | None:
        handle = self._get(name)
        with handle.lock:
            return sql.get_document(handle.db, doc_id)

    def search(self, name: str, vector: np.ndarray, top_k: int, where: Filter | None = None) -> list[StoredHit]:
        return self._get(name).search(vector, top_k, where)

    def flush(self, name: str) -> None:
        handle = self._get(name)
        with handle.lock:
            handle.save()

    def close(self) -> None:
        with self._lock:
            handles, self._open = list(self._open.values()), {}
        for handle in handles:
            handle.close()


FP16_MAX = 65504.0  # the flat index keeps an fp16 copy of every vector


def _check_vectors(doc: DocumentRecord, dimensions: int) -> None:
    for chunk in doc.chunks:
        where = f"document {doc.id!r} chunk {chunk.index}"
        if np.shape(chunk.vector) != (dimensions,):
            raise InputError(f"{where}: vector of shape {np.shape(chunk.vector)}, "
                             f"the collection holds {dimensions} dimensions")
        values = np.asarray(chunk.vector, np.float32)
        if not np.all(np.isfinite(values)) or np.abs(values).max(initial=0.0) >= FP16_MAX:
            raise InputError(f"{where}: vector values must be finite and below {FP16_MAX:g} in magnitude")
