"""The SQLite half of the embedded store: schema, one-document transactions, and change reads.

SQLite (WAL) is the source of truth for documents, chunks and vectors (float32 blobs). Each
document is written in one transaction with all its chunks, so a kill -9 leaves whole documents
only. Every write transaction bumps `state.version`, and the ids of chunks it removed go to
`removed` with that version: a FAISS index stamped with an older version catches up by adding
chunks with larger ids and removing the ids logged since.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import DocumentRecord, StoredChunk, StoredDocument

__all__ = ["DB_FILE", "Changes", "connect", "initialise", "read_meta", "write_document", "delete_documents",
           "version_and_floor", "changes_since", "read_all_vectors", "prune_removed", "get_document", "chunk_rows",
           "chunk_vectors", "select_in"]

DB_FILE = "store.sqlite"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, removed_floor INTEGER NOT NULL);
CREATE TABLE documents (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, metadata TEXT NOT NULL,
    chunks INTEGER NOT NULL, tokens INTEGER NOT NULL);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, idx INTEGER NOT NULL,
    start_char INTEGER NOT NULL, end_char INTEGER NOT NULL, tokens INTEGER NOT NULL,
    text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX chunks_by_document ON chunks (doc_id, idx);
CREATE TABLE removed (chunk_id INTEGER PRIMARY KEY, version INTEGER NOT NULL);
CREATE INDEX removed_by_version ON removed (version);
INSERT INTO state (id, version, removed_floor) VALUES (1, 0, 0);
"""


def connect(directory: Path) -> sqlite3.Connection:
    """Autocommit mode: every transaction in this module is explicit (BEGIN ... COMMIT)."""
    db = sqlite3.connect(directory / DB_FILE, isolation_level=None, check_same_thread=False, timeout=60.0)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a crashed process loses nothing committed; a power cut may lose the
    # last transactions but never leaves a torn one.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (writers queue on SQLite's lock)."""

    def __init__(self, db: sqlite3.Connection, immediate: bool = True) -> None:
        self.db, self.begin = db, "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def initialise(db: sqlite3.Connection, meta: dict[str, str]) -> None:
    with _Transaction(db):
        for statement in SCHEMA.strip().split(";"):
            if statement.strip():
                db.execute(statement)
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())


def read_meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def version_and_floor(db: sqlite3.Connection) -> tuple[int, int]:
    return db.execute("SELECT version, removed_floor FROM state WHERE id = 1").fetchone()


def _bump(db: sqlite3.Connection) -> int:
    (version,) = db.execute("UPDATE state SET version = version + 1 WHERE id = 1 RETURNING version").fetchone()
    return version


def _remove_chunks_of(db: sqlite3.Connection, doc_id: str, version: int) -> list[int]:
    old = [row[0] for row in db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
    if old:
        db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        db.executemany("INSERT OR REPLACE INTO removed (chunk_id, version) VALUES (?, ?)",
                       [(chunk_id, version) for chunk_id in old])
    return old


def write_document(db: sqlite3.Connection, doc: DocumentRecord) -> tuple[int, list[int], list[int]]:
    """Replace one document with all its chunks in one transaction -> (version, removed ids, new ids)."""
    with _Transaction(db):
        version = _bump(db)
        removed = _remove_chunks_of(db, doc.id, version)
        db.execute("INSERT OR REPLACE INTO documents (id, hash, metadata, chunks, tokens) VALUES (?, ?, ?, ?, ?)",
                   (doc.id, doc.content_hash, json.dumps(doc.metadata, ensure_ascii=False),
                    len(doc.chunks), sum(c.tokens for c in doc.chunks)))
        added = []
        for c in doc.chunks:
            cursor = db.execute(
                "INSERT INTO chunks (doc_id, idx, start_char, end_char, tokens, text, vector) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (doc.id, c.index, c.start, c.end, c.tokens, c.text, np.asarray(c.vector, "<f4").tobytes()))
            added.append(int(cursor.lastrowid))
    return version, removed, added


def delete_documents(db: sqlite3.Connection, ids: Sequence[str]) -> tuple[int, list[str], list[int]]:
    """-> (version, ids that existed, chunk ids removed); one transaction for the whole call."""
    with _Transaction(db):
        version = _bump(db)
        existed, removed = [], []
        for doc_id in ids:
            if db.execute("DELETE FROM documents WHERE id = ?", (doc_id,)).rowcount:
                existed.append(doc_id)
            removed.extend(_remove_chunks_of(db, doc_id, version))
    return version, existed, removed


@dataclass(frozen=True)
class Changes:
    version: int
    removed: np.ndarray  # int64 chunk ids removed after the index's version
    added_ids: np.ndarray  # int64, increasing
    added_vectors: np.ndarray  # float32 [n, d]


def changes_since(db: sqlite3.Connection, version: int, max_chunk_id: int, dimensions: int) -> Changes | None:
    """What happened after `version`, read in one snapshot; None if the log no longer reaches back."""
    with _Transaction(db, immediate=False):
        current, floor = version_and_floor(db)
        if version < floor or version > current:
            return None
        removed = [r[0] for r in db.execute("SELECT chunk_id FROM removed WHERE version > ?", (version,))]
        rows = db.execute("SELECT id, vector FROM chunks WHERE id > ? ORDER BY id", (max_chunk_id,)).fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vectors = _blobs_to_array([r[1] for r in rows], dimensions)
    return Changes(current, np.array(removed, dtype=np.int64), ids, vectors)


def read_all_vectors(db: sqlite3.Connection, dimensions: int,
                     add: Callable[[np.ndarray, np.ndarray], None], batch: int = 8192) -> int:
    """Feed every chunk's (ids, vectors) to `add` in batches from one snapshot; returns its version."""
    with _Transaction(db, immediate=False):
        version, _ = version_and_floor(db)
        cursor = db.execute("SELECT id, vector FROM chunks ORDER BY id")
        while rows := cursor.fetchmany(batch):
            add(np.array([r[0] for r in rows], np.int64), _blobs_to_array([r[1] for r in rows], dimensions))
    return version


def _blobs_to_array(blobs: list[bytes], dimensions: int) -> np.ndarray:
    if not blobs:
        return np.empty((0, dimensions), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dimensions).astype(np.float32)


def prune_removed(db: sqlite3.Connection, version: int) -> None:
    """Forget removals an index saved at `version` already reflects; older indexes then rebuild."""
    with _Transaction(db):
        db.execute("DELETE FROM removed WHERE version <= ?", (version,))
        db.execute("UPDATE state SET removed_floor = MAX(removed_floor, ?) WHERE id = 1", (version,))


def select_in(db: sqlite3.Connection, query: str, values: Sequence[Any], batch: int = 900) -> list[tuple]:
    """The rows of `query`, whose `{marks}` is filled with one `?` per value, run batch by batch
    to stay under SQLite's bound-parameter limit; rows in batch order."""
    rows: list[tuple] = []
    for first in range(0, len(values), batch):
        part = list(values[first:first + batch])
        rows += db.execute(query.format(marks=",".join("?" * len(part))), part).fetchall()
    return rows


def chunk_rows(db: sqlite3.Connection, chunk_ids: Sequence[int]) -> dict[int, tuple]:
    """chunk id -> (doc_id, idx, start, end, text, metadata dict) for the ids still stored."""
    rows = select_in(db, "SELECT c.id, c.doc_id, c.idx, c.start_char, c.end_char, c.text, d.metadata FROM chunks c "
                         "JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})", [int(i) for i in chunk_ids])
    return {row[0]: (*row[1:6], json.loads(row[6])) for row in rows}


def chunk_vectors(db: sqlite3.Connection, chunk_ids: np.ndarray, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [m], float32 vectors [m, d]) of the chunk ids still stored, ids ascending."""
    ids = np.unique(np.asarray(chunk_ids, np.int64)).tolist()  # ascending: so are the batches' rows
    rows = select_in(db, "SELECT id, vector FROM chunks WHERE id IN ({marks}) ORDER BY id", ids)
    return np.array([r[0] for r in rows], np.int64), _blobs_to_array([r[1] for r in rows], dimensions)


def get_document(db: sqlite3.Connection, doc_id: str) -> StoredDocument | None:
    with _Transaction(db, immediate=False):
        row = db.execute("SELECT hash, metadata FROM documents WHERE id = ?", (doc_id,)).fetchone()
        chunks = db.execute("SELECT idx, text, start_char, end_char, tokens FROM chunks WHERE doc_id = ? ORDER BY idx",
                            (doc_id,)).fetchall()
    if row is None:
        return None
    return StoredDocument(doc_id, row[0], json.loads(row[1]), tuple(StoredChunk(*c) for c in chunks))
