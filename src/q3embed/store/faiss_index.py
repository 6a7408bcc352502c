"""The FAISS side of the embedded store: an index over chunk ids, derived from SQLite.

SQLite is the source of truth; this index is a cache that can always be rebuilt from it. The
index file carries a stamp (the store's uuid and the SQLite write version it reflects), is written
to a temporary file and renamed over the old one, so a crash leaves either the old file or the new
one, never a torn one; an old file is caught up from SQLite on open.

    flat   IndexIDMap2(IndexScalarQuantizer fp16): exact search in two steps. A scan of the fp16
           copy (half the bytes of fp32; a single query is bound by memory bandwidth) keeps every
           row whose fp16 score lies within twice the fp16 error bound of the k-th best; those
           candidates are rescored from their float32 vectors in SQLite (the truth) and the top k
           of those exact scores returned. The bound is proven below and held to in tests, so the
           result is the exact float32 top k, at about 40% of a float32 scan's time.
           Vectors are unit length, so IP = cosine.
    hnsw   IndexIDMap2(IndexHNSWFlat, inner product): approximate; HNSW cannot remove points,
           so removed chunks stay in the graph as `stale` ids (dropped when results are joined
           with SQLite) until the index is rebuilt
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

__all__ = ["IndexStamp", "VectorIndex", "HNSW_M", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "EXACT_FILTER_LIMIT"]

MAGIC = b"Q3EMBED-FAISS-2\n"  # 2: flat holds fp16 codes (a version-1 file is rebuilt from SQLite)
HNSW_M = 32  # links per node
# FAISS's own default: a build about 3x faster than 128 on 1024-d vectors, at the same recall on
# clustered (embedding-like) data in bench/store.py.
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64  # candidates kept while searching (at least top_k)
# With HNSW, a filter matching at most this many chunks is answered exactly from their vectors; a
# wider one searches the graph restricted to the matching ids (approximate, like HNSW itself).
EXACT_FILTER_LIMIT = 4096
# |fp16 score - exact score| <= SCAN_ERROR x |q| x max|x| for every row. The fp16 scan rounds each
# element of q and x (relative 2^-11 each), accumulates in fp32 (d x 2^-24 <= 2^-12 up to d = 4096)
# and rounds the score to fp16 (2^-11): at most (2^-10 + 2^-11 + 2^-12) x sum|q_i x_i| <= 2^-9 x
# |q| |x| (Cauchy-Schwarz); subnormal rounding adds under 2^-18. SCAN_ERROR is twice that bound.
SCAN_ERROR = 2.0 ** -8

# (chunk ids) -> (the ids still stored, their float32 vectors [m, d]): the exact rescoring source
VectorSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class IndexStamp:
    store_uuid: str
    kind: str
    dimensions: int
    version: int = 0  # the SQLite write version this index reflects
    max_chunk_id: int = 0  # every chunk id up to this one has been seen
    stale: int = 0  # removed ids still inside an HNSW graph
    max_norm: float = 0.0  # the largest vector norm ever added (an upper bound for the scan error)


class VectorIndex:
    """exact_vectors: where the flat index's candidates get their float32 vectors (SQLite)."""

    def __init__(self, stamp: IndexStamp, exact_vectors: VectorSource, index: faiss.Index | None = None) -> None:
        self.stamp = stamp
        self.exact_vectors = exact_vectors
        self.index = index if index is not None else _new_faiss_index(stamp.kind, stamp.dimensions)

    @property
    def size(self) -> int:
        """Live vectors (stale HNSW entries not counted)."""
        return int(self.index.ntotal) - self.stamp.stale

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids [n] int64 (increasing, above max_chunk_id), vectors [n, d] float32."""
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.index.add_with_ids(vectors, ids.astype(np.int64))
            self.stamp.max_chunk_id = max(self.stamp.max_chunk_id, int(ids.max()))
            self.stamp.max_norm = max(self.stamp.max_norm, float(np.linalg.norm(vectors, axis=1).max()))

    def remove(self, ids: np.ndarray) -> None:
        """Ids not in the index are ignored (they may have been added and removed since the stamp)."""
        if not len(ids):
            return
        ids = ids.astype(np.int64)
        if self.stamp.kind == "flat":
            self.index.remove_ids(ids)
        else:  # HNSW: cannot remove; only ids the index already holds become stale
            self.stamp.stale += int(np.count_nonzero(ids <= self.stamp.max_chunk_id))

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [<=k], ids [<=k]) best first; `allowed` (ids held by the index) restricts the search."""
        k = min(k, int(self.index.ntotal))
        if k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if self.stamp.kind == "flat":
            return self._scan(query, k, allowed)
        if allowed is not None and len(allowed) <= EXACT_FILTER_LIMIT:
            return _top_k(self.vectors(allowed) @ query, np.asarray(allowed, np.int64), k)
        params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k))
        if allowed is not None:
            params.sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        scores, ids = self.index.search(query.reshape(1, -1), k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _scan(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k: an fp16 scan for candidates, then their float32 vectors rescored.

        torch's fp16 matrix-vector product reads the codes on every core at memory bandwidth
        (about 6 ms for 100k x 1024 on 2 cores; FAISS answers one query on one thread, and an
        fp32 sgemv reads twice the bytes). With `allowed`, only the rows of those ids are read.
        """
        codes, ids = self._fp16_rows()
        if allowed is not None:
            rows = _positions(ids, np.asarray(allowed, np.int64))
            codes, ids = codes[rows], ids[rows]
        if not len(ids):
            return np.empty(0, np.float32), np.empty(0, np.int64)
        approx = torch.mv(codes, torch.from_numpy(query).to(torch.float16)).float()  # [n]
        kth_best = float(torch.topk(approx, min(k, len(ids)), sorted=False).values.min())
        margin = 2 * SCAN_ERROR * float(np.linalg.norm(query)) * self.stamp.max_norm
        candidates = ids[(approx >= kth_best - margin).numpy()]
        found, vectors = self.exact_vectors(candidates)
        return _top_k(vectors @ query, found, k)

    def _fp16_rows(self) -> tuple[torch.Tensor, np.ndarray]:
        """(codes [n, d] float16, ids [n] int64): views of the flat index's own memory, no copies."""
        inner = faiss.downcast_index(self.index.index)
        n = int(inner.ntotal)
        codes = faiss.rev_swig_ptr(inner.codes.data(), n * inner.code_size).view(np.float16).reshape(n, inner.d)
        return torch.from_numpy(codes), faiss.rev_swig_ptr(self.index.id_map.data(), n)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of `ids` [n, d] (every id must be in the index)."""
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    # ------------------------------------------------------------ file

    def save(self, path: Path) -> None:
        """Atomically: a temporary file, fsync, rename; a reader sees the old file or the new one."""
        header = json.dumps(asdict(self.stamp)).encode()
        data = faiss.serialize_index(self.index)  # uint8 array
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as out:
            out.write(MAGIC + struct.pack("<I", len(header)) + header)
            data.tofile(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path, expected: IndexStamp, exact_vectors: VectorSource) -> "VectorIndex | None":
        """The saved index, or None when there is none or it belongs to another store or layout."""
        try:
            raw = np.fromfile(path, dtype=np.uint8)
        except OSError:
            return None
        head = len(MAGIC) + 4
        if raw.size < head or raw[: len(MAGIC)].tobytes() != MAGIC:
            return None
        (length,) = struct.unpack("<I", raw[len(MAGIC):head].tobytes())
        try:
            stamp = IndexStamp(**json.loads(raw[head:head + length].tobytes()))
            if (stamp.store_uuid, stamp.kind, stamp.dimensions) != (
                    expected.store_uuid, expected.kind, expected.dimensions):
                return None
            index = faiss.deserialize_index(raw[head + length:])
        except (ValueError, TypeError, RuntimeError):  # torn or foreign file: rebuild instead
            return None
        return cls(stamp, exact_vectors, index)


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, ids), best first; ties keep the lower position."""
    if k < len(scores):
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
    else:
        top = np.argsort(-scores, kind="stable")
    return scores[top].astype(np.float32), ids[top].astype(np.int64)


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of the `wanted` ids. Ids are added in increasing order and FAISS removes without
    reordering, so `ids` is sorted and a binary search finds them; should it not be, np.isin does."""
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        return np.flatnonzero(np.isin(ids, wanted))
    rows = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return rows[ids[rows] == wanted]


def _new_faiss_index(kind: str, dimensions: int) -> faiss.Index:
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dimensions, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        inner = faiss.IndexScalarQuantizer(dimensions, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIDMap2(inner)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
