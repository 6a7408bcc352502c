"""Upsert: documents -> chunks -> vectors -> store, skipping documents whose content is unchanged.

Documents are taken in batches: one embedding call covers the chunks of a whole batch (the model
works best on many inputs at once), then the store commits the batch document by document. A
document whose content hash (text + metadata) is already stored is not embedded again, which is
also what makes a re-run after a crash resume where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..store.names import check_document_id, check_metadata
from ..store.protocol import ChunkRecord, CollectionInfo, DocumentRecord, VectorStore
from ..text.unicode import check_encodable
from .chunking import ChunkingOptions, chunk_text
from .protocols import TextEncoder
from .readers import Document, Skipped

__all__ = ["UpsertReport", "upsert_documents", "content_hash", "as_document", "BATCH_DOCUMENTS", "BATCH_CHARS"]

BATCH_DOCUMENTS = 64  # documents per embedding call ...
BATCH_CHARS = 256_000  # ... or fewer when they are long (about 64k tokens)


@dataclass
class UpsertReport:
    documents: int = 0  # documents received (valid ones)
    added: int = 0  # new ids
    updated: int = 0  # ids whose content changed: old chunks replaced
    unchanged: int = 0  # same content hash as stored: skipped without embedding
    chunks: int = 0  # chunks written
    tokens: int = 0  # tokens in the chunks written
    seconds: float = 0.0
    skipped: list[Skipped] = field(default_factory=list)  # files, records or documents left out, with why

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "skipped"}
        out["skipped"] = [{"source": s.source, "reason": s.reason} for s in self.skipped]
        return out


def content_hash(doc: Document) -> str:
    canonical = json.dumps({"text": doc.text, "metadata": doc.metadata}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def as_document(item: Any, where: str = "document") -> Document:
    """A Document, or a mapping {"id", "text", "metadata"} -> Document; InputError when unusable."""
    if isinstance(item, Mapping):
        unknown = set(item) - {"id", "text", "metadata"}
        if unknown:
            raise InputError(f"{where}: unknown fields {sorted(unknown)} (use id, text, metadata)")
        item = Document(item.get("id"), item.get("text"), item.get("metadata") or {})  # type: ignore[arg-type]
    if not isinstance(item, Document):
        raise InputError(f"{where} must be a Document or an object with id, text and metadata")
    doc_id = check_document_id(item.id)
    if not isinstance(item.text, str) or not item.text.strip():
        raise InputError(f"document {doc_id!r} has no text")
    check_encodable(item.text, f"the text of document {doc_id!r}")
    return Document(doc_id, item.text, check_metadata(item.metadata, doc_id))


def _batches(items: Iterable[Document]) -> Iterable[dict[str, Document]]:
    """Batches keyed by id: a repeated id within a batch keeps its last version."""
    batch: dict[str, Document] = {}
    chars = 0
    for doc in items:
        batch[doc.id] = doc
        chars += len(doc.text)
        if len(batch) >= BATCH_DOCUMENTS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = {}, 0
    if batch:
        yield batch


def _records(docs: list[Document], hashes: list[str], encoder: TextEncoder, info: CollectionInfo,
             chunking: ChunkingOptions) -> list[DocumentRecord]:
    chunked = [chunk_text(d.text, encoder.token_offsets(d.text), chunking) for d in docs]
    texts = [c.text for chunks in chunked for c in chunks]
    size = info.dimensions if info.dimensions != encoder.info.dimensions else None
    vectors = np.atleast_2d(encoder.encode(texts, dimensions=size)) if texts else np.empty((0, info.dimensions))
    out, row = [], 0
    for doc, digest, chunks in zip(docs, hashes, chunked, strict=True):
        records = []
        for c in chunks:
            records.append(ChunkRecord(c.index, c.text, c.start, c.end, c.tokens, vectors[row]))
            row += 1
        out.append(DocumentRecord(doc.id, digest, doc.metadata, tuple(records)))
    return out


def upsert_documents(store: VectorStore, info: CollectionInfo, encoder: TextEncoder, items: Iterable[Any], *,
                     skip_invalid: bool = False,
                     progress: Callable[[UpsertReport], None] | None = None) -> UpsertReport:
    """Write `items` (Documents, {"id", "text", "metadata"} mappings, or Skipped from a reader).

    skip_invalid: list a bad document in report.skipped and go on, instead of raising InputError.
    progress: called with the running report after each committed batch.
    """
    report, started = UpsertReport(), time.perf_counter()
    chunking = ChunkingOptions(info.chunk_size, info.chunk_overlap)

    def valid(stream: Iterable[Any]) -> Iterable[Document]:
        for number, item in enumerate(stream):
            if isinstance(item, Skipped):
                report.skipped.append(item)
                continue
            try:
                yield as_document(item, f"document {number}")
            except InputError as exc:
                if not skip_invalid:
                    raise
                report.skipped.append(Skipped(str(getattr(item, "id", None) or f"document {number}"), str(exc)))

    for batch in _batches(valid(items)):
        stored = store.document_hashes(info.name, list(batch))
        changed, hashes = [], []
        for doc in batch.values():
            digest = content_hash(doc)
            if stored.get(doc.id) == digest:
                report.unchanged += 1
            else:
                changed.append(doc)
                hashes.append(digest)
        records = _records(changed, hashes, encoder, info, chunking)
        for record in records:
            if not record.chunks:  # only whitespace after all; nothing to embed or find
                report.skipped.append(Skipped(record.id, "no text"))
        records = [r for r in records if r.chunks]
        store.write(info.name, records)
        report.documents += len(batch) - (len(changed) - len(records))
        report.updated += sum(1 for r in records if r.id in stored)
        report.added += sum(1 for r in records if r.id not in stored)
        report.chunks += sum(len(r.chunks) for r in records)
        report.tokens += sum(c.tokens for r in records for c in r.chunks)
        store.flush(info.name)
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(report)
    report.seconds = time.perf_counter() - started
    return report
