"""The embedded store's own promises: the FAISS index is a cache of SQLite that is caught up,
rebuilt when broken, shared safely between processes, and a kill -9 loses no whole document."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import q3embed.store.embedded as embedded
import q3embed.store.faiss_index as faiss_index
from q3embed.errors import InputError
from q3embed.store.embedded import INDEX_FILE, EmbeddedStore
from q3embed.store.filters import parse_filter
from q3embed.store.sqlite_db import DB_FILE
from store_fixtures import info_for, make_document, unit_vectors

D = 16


def _docs(start: int, stop: int, seed: int = 0, chunks: int = 2):
    vectors = unit_vectors((stop - start) * chunks, D, seed).reshape(-1, chunks, D)
    return [make_document(f"doc{i}", vectors[i - start], {"i": i}) for i in range(start, stop)], vectors


def _handle(store: EmbeddedStore, name: str) -> embedded._Collection:
    return store._get(name)


def test_a_stale_index_file_is_caught_up_not_rebuilt(tmp_path):
    first = EmbeddedStore(tmp_path)
    first.create_collection(info_for("c"))
    docs, _ = _docs(0, 10)
    first.write("c", docs)
    first.close()  # saves the index at this version
    writer = EmbeddedStore(tmp_path)
    more, more_vectors = _docs(10, 15, seed=1)
    writer.write("c", more)
    writer.delete("c", ["doc3"])  # not closed: the index file on disk lags behind SQLite
    reader = EmbeddedStore(tmp_path)
    hit = reader.search("c", more_vectors[2, 0], 1)[0]
    assert _handle(reader, "c").last_sync == "caught-up"
    assert hit.document_id == "doc12"
    assert "doc3" not in {h.document_id for h in reader.search("c", docs[3].chunks[0].vector, 30)}
    assert _handle(reader, "c").index.size == reader.counts("c").chunks == 28


def test_writes_of_another_store_instance_are_seen_by_the_next_search(tmp_path):
    reader, writer = EmbeddedStore(tmp_path), EmbeddedStore(tmp_path)
    reader.create_collection(info_for("c"))
    assert reader.search("c", unit_vectors(1, D)[0], 3) == []  # index loaded, empty
    docs, vectors = _docs(0, 4)
    writer.write("c", docs)
    assert reader.search("c", vectors[1, 1], 1)[0].document_id == "doc1"
    writer.delete("c", ["doc1"])
    assert "doc1" not in {h.document_id for h in reader.search("c", vectors[1, 1], 8)}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "format-1"])
def test_a_broken_or_foreign_index_file_is_rebuilt_from_sqlite(tmp_path, damage):
    store = EmbeddedStore(tmp_path)
    store.create_collection(info_for("c"))
    docs, vectors = _docs(0, 6)
    store.write("c", docs)
    store.close()
    index_file = tmp_path / "c" / INDEX_FILE
    if damage == "truncate":
        index_file.write_bytes(index_file.read_bytes()[:100])
    elif damage == "garbage":
        index_file.write_bytes(os.urandom(4096))
    elif damage == "format-1":  # the fp32 flat index of earlier versions
        index_file.write_bytes(b"Q3EMBED-FAISS-1\n" + index_file.read_bytes()[len(faiss_index.MAGIC):])
    else:  # another collection's (valid) index file
        other = EmbeddedStore(tmp_path)
        other.create_collection(info_for("d"))
        other.write("d", _docs(0, 2, seed=7)[0])
        other.close()
        index_file.write_bytes((tmp_path / "d" / INDEX_FILE).read_bytes())
    reopened = EmbeddedStore(tmp_path)
    assert reopened.search("c", vectors[5, 1], 1)[0].document_id == "doc5"
    assert _handle(reopened, "c").last_sync == "rebuilt"


def test_hnsw_keeps_removed_points_out_of_results(tmp_path):
    store = EmbeddedStore(tmp_path)
    store.create_collection(info_for("h", index="hnsw"))
    docs, vectors = _docs(0, 20)
    store.write("h", docs)
    store.delete("h", [f"doc{i}" for i in range(0, 20, 2)])
    hits = store.search("h", vectors[0, 0], 10)
    assert len(hits) == 10 and all(int(h.document_id[3:]) % 2 == 1 for h in hits)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_filtered_search_is_exact_on_small_sets_and_uses_a_selector_on_wide_ones(tmp_path, monkeypatch, index):
    store = EmbeddedStore(tmp_path)
    store.create_collection(info_for("c", index=index))
    docs, vectors = _docs(0, 30)
    store.write("c", docs)
    where = parse_filter({"i": {"$lt": 15}})
    flat = vectors[:15].reshape(-1, D)
    expected = [(f"doc{i // 2}", i % 2) for i in np.argsort(-(flat @ vectors[20, 0]), kind="stable")[:5]]
    exact = store.search("c", vectors[20, 0], 5, where)
    assert [(h.document_id, h.chunk_index) for h in exact] == expected
    monkeypatch.setattr(faiss_index, "EXACT_FILTER_LIMIT", 0)  # HNSW: the graph search with an id selector
    selected = store.search("c", vectors[20, 0], 5, where)
    assert [(h.document_id, h.chunk_index) for h in selected] == expected  # 60 points: HNSW finds them all


# ---------------------------------------------------------------- exact search through the fp16 scan

def _near_ties(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A query and n unit vectors whose cosines to it are spread over [0.45, 0.5], about 2e-5
    apart: closer than an fp16 score resolves (2^-12 there, plus the rounding of each element)."""
    rng = np.random.default_rng(seed)
    query = unit_vectors(1, d, seed)[0]
    other = rng.standard_normal((n, d))
    other -= np.outer(other @ query, query)  # orthogonal to the query
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cosines = rng.uniform(0.45, 0.5, (n, 1))
    rows = cosines * query + np.sqrt(1 - cosines ** 2) * other
    return query, (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _fp16_alone_misses(rows: np.ndarray, query: np.ndarray, k: int) -> bool:
    """Whether the fp16 top k (ties included) lacks one of the exact top k: a scan without margin."""
    import torch

    approx = torch.mv(torch.from_numpy(rows).half(), torch.from_numpy(query).half()).float().numpy()
    kth = np.partition(approx, len(approx) - k)[len(approx) - k]
    return not set(_exact_order(rows, query)[:k]) <= set(np.flatnonzero(approx >= kth).tolist())


def _exact_order(rows: np.ndarray, query: np.ndarray) -> list[int]:
    return np.argsort(-(rows.astype(np.float64) @ query.astype(np.float64)), kind="stable").tolist()


def _as_hits(order: list[int], per_doc: int) -> list[tuple[str, int]]:
    return [(f"doc{r // per_doc}", r % per_doc) for r in order]


def test_flat_search_returns_the_exact_top_k_where_fp16_alone_would_not(tmp_path):
    d, per_doc, k = 8, 10, 10
    store = EmbeddedStore(tmp_path)
    cases = [_near_ties(3000, d, seed) for seed in range(6)]
    assert any(_fp16_alone_misses(rows, query, k) for query, rows in cases)  # so this test can fail
    odd = parse_filter({"i": {"$in": list(range(1, 300, 2))}})
    for seed, (query, rows) in enumerate(cases):
        name = f"c{seed}"
        store.create_collection(info_for(name, dimensions=d))
        store.write(name, [make_document(f"doc{i}", rows[i * per_doc:(i + 1) * per_doc], {"i": i})
                           for i in range(len(rows) // per_doc)])
        order = _exact_order(rows, query)
        hits = store.search(name, query, k)
        assert [(h.document_id, h.chunk_index) for h in hits] == _as_hits(order[:k], per_doc)
        assert [h.score for h in hits] == pytest.approx((rows[order[:k]] @ query).tolist(), abs=1e-6)
        hits = store.search(name, query, k, odd)  # a filter keeps the scan exact too
        odd_order = [r for r in order if (r // per_doc) % 2 == 1][:k]
        assert [(h.document_id, h.chunk_index) for h in hits] == _as_hits(odd_order, per_doc)


@pytest.mark.parametrize("d", [16, 1024, 4096])
def test_the_fp16_scan_stays_inside_the_error_bound_its_margin_assumes(d):
    """All-positive vectors: every rounding error has the same sign, the worst case for the bound.
    Fails should torch ever accumulate the fp16 product in fp16."""
    import torch

    rows = np.abs(unit_vectors(512, d, seed=d))
    query = np.abs(unit_vectors(1, d, seed=d + 1)[0])
    approx = torch.mv(torch.from_numpy(rows).half(), torch.from_numpy(query).half()).double().numpy()
    assert np.abs(approx - rows.astype(np.float64) @ query.astype(np.float64)).max() <= faiss_index.SCAN_ERROR / 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, 7e4])
def test_vectors_fp16_cannot_hold_are_refused(tmp_path, bad):
    store = EmbeddedStore(tmp_path)
    store.create_collection(info_for("c"))
    vector = unit_vectors(1, D)
    vector[0, 3] = bad
    with pytest.raises(InputError, match="finite"):
        store.write("c", [make_document("x", vector)])


# ---------------------------------------------------------------- kill -9 during an ingest

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from q3embed.store.embedded import EmbeddedStore
from store_fixtures import make_document, unit_vectors
store = EmbeddedStore({root!r})
for i in range(100000):
    vectors = unit_vectors(1 + i % 7, {d}, seed=i)
    store.write("c", [make_document(f"doc{{i}}", vectors, {{"i": i}})])
    time.sleep(0.002)
"""


def _whole_documents(db_path: Path) -> tuple[int, bool]:
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT d.id, d.chunks, count(c.id), group_concat(c.idx) FROM documents d "
                          "LEFT JOIN chunks c ON c.doc_id = d.id GROUP BY d.id").fetchall()
        orphans = db.execute("SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)").fetchone()[0]
    finally:
        db.close()
    whole = all(n == count and sorted(map(int, idx.split(","))) == list(range(n)) for _, n, count, idx in rows)
    return len(rows), whole and orphans == 0


def test_kill_9_mid_ingest_leaves_only_whole_documents(tmp_path):
    EmbeddedStore(tmp_path).create_collection(info_for("c"))
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent),
                                                                 root=str(tmp_path), d=D)])
    db_path = tmp_path / "c" / DB_FILE
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                pytest.fail(f"the writer exited early with {child.returncode}")
            committed, _ = _whole_documents(db_path)
            if committed >= 40:
                break
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    count, whole = _whole_documents(db_path)
    assert whole and 40 <= count < 100000
    store = EmbeddedStore(tmp_path)
    counts = store.counts("c")
    assert counts.documents == count
    expected = unit_vectors(1 + 5 % 7, D, seed=5)
    hit = store.search("c", expected[0], 1)[0]
    assert (hit.document_id, hit.chunk_index, hit.metadata) == ("doc5", 0, {"i": 5})
    assert _handle(store, "c").index.size == counts.chunks
    # resuming: the writer's documents after the last whole one are simply written again
    store.write("c", [make_document(f"doc{i}", unit_vectors(1 + i % 7, D, seed=i), {"i": i})
                      for i in range(count, count + 5)])
    assert store.counts("c").documents == count + 5
    store.close()
