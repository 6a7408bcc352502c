"""Collections (the Python API of the retrieval stack) on both stores, with the tiny Qwen3 models."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from q3embed.errors import ConfigurationError, ConflictError, InputError, NotFoundError
from q3embed.pipeline import Collections, Document
from q3embed.store.embedded import EmbeddedStore
from store_fixtures import milvus_store, store, unique_name  # noqa: F401  (fixtures)

DOCS = [
    Document("beijing", "The capital of China is Beijing. It has been the capital for centuries, and the city "
             "is home to the Forbidden City and many universities.", {"lang": "en", "year": 2020}),
    Document("gravity", "Gravity is a force that attracts mass. Newton described it, and Einstein explained it "
             "as the curvature of spacetime.", {"lang": "en", "year": 2018}),
    Document("paris", "Paris est la capitale de la France.", {"lang": "fr", "year": 2021}),
    Document("cats", "Cats purr when they are content, and sometimes when they are stressed.", {"lang": "en"}),
]
QUERY = "What is the capital of China?"


@pytest.fixture
def cols(store, embedder, reranker):
    return Collections(store, embedder, reranker)


@pytest.fixture
def filled(cols):
    name = unique_name("docs")
    cols.create(name, chunk_size=12, chunk_overlap=3)
    report = cols.upsert(name, DOCS)
    assert (report.documents, report.added, report.unchanged) == (4, 4, 0)
    return cols, name


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_create_records_the_model_and_chunking(cols, embedder):
    name = unique_name()
    described = cols.create(name, chunk_size=100, chunk_overlap=10)
    info = described.info
    assert (info.model, info.dimensions, info.chunk_size, info.chunk_overlap, info.index) == (
        embedder.info.name, 64, 100, 10, "flat")
    assert (described.documents, described.chunks) == (0, 0)
    assert name in [d.info.name for d in cols.list()]
    with pytest.raises(ConflictError, match="already exists"):
        cols.create(name)
    assert cols.create(name, chunk_size=100, exist_ok=True).info == info
    with pytest.raises(ConflictError, match="chunk_size 100"):
        cols.create(name, chunk_size=50, exist_ok=True)
    cols.drop(name)
    with pytest.raises(NotFoundError):
        cols.describe(name)


def test_upsert_skips_unchanged_and_replaces_changed_documents(filled):
    cols, name = filled
    before = cols.describe(name)
    assert before.documents == 4 and before.chunks > 4
    again = cols.upsert(name, DOCS)
    assert (again.unchanged, again.added, again.updated, again.chunks) == (4, 0, 0, 0)
    changed = [Document("cats", "Dogs bark.", {"lang": "en"}), dataclasses.replace(DOCS[2], metadata={"lang": "de"})]
    report = cols.upsert(name, changed)
    assert (report.updated, report.added, report.chunks) == (2, 0, 2)
    stored = cols.get(name, "cats")
    assert [c.text for c in stored.chunks] == ["Dogs bark."] and cols.get(name, "paris").metadata == {"lang": "de"}
    assert cols.describe(name).documents == 4


def test_search_results_carry_offsets_and_true_cosine_scores(filled, embedder):
    cols, name = filled
    result = cols.search(name, QUERY, top_k=3)
    assert len(result.hits) == 3 and not result.reranked and result.candidates == 3
    query_vector = embedder.encode(QUERY, query=True)
    texts = {d.id: d.text for d in DOCS}
    for rank, hit in enumerate(result.hits, start=1):
        assert hit.rank == rank and hit.rerank_score is None and hit.score == hit.vector_score
        assert texts[hit.document_id][hit.start:hit.end] == hit.text
        assert hit.vector_score == pytest.approx(_cosine(query_vector, embedder.encode(hit.text)), abs=1e-4)
    assert [h.vector_score for h in result.hits] == sorted((h.vector_score for h in result.hits), reverse=True)
    assert result.hits[0].metadata == next(d.metadata for d in DOCS if d.id == result.hits[0].document_id)


def test_rerank_reorders_candidates_by_the_reranker_score(filled, reranker):
    cols, name = filled
    result = cols.search(name, QUERY, top_k=2, rerank=True, candidates=6)
    assert result.reranked and result.candidates == 6 and len(result.hits) == 2
    plain = cols.search(name, QUERY, top_k=6)
    expected = reranker.score(QUERY, [h.text for h in plain.hits])
    best = sorted(range(6), key=lambda i: -expected[i])[:2]
    assert [(h.document_id, h.chunk_index) for h in result.hits] == [
        (plain.hits[i].document_id, plain.hits[i].chunk_index) for i in best]
    for hit, i in zip(result.hits, best):
        assert hit.rerank_score == pytest.approx(expected[i], abs=1e-5) and hit.score == hit.rerank_score
        assert hit.vector_score == pytest.approx(plain.hits[i].vector_score, abs=1e-6)


def test_filters_apply_to_document_metadata(filled):
    cols, name = filled
    hits = cols.search(name, QUERY, top_k=50, filter='{"lang": "en", "year": {"$gte": 2019}}').hits
    assert {h.document_id for h in hits} == {"beijing"}
    assert cols.search(name, QUERY, top_k=5, filter={"lang": "xx"}).hits == []
    with pytest.raises(InputError, match="filter"):
        cols.search(name, QUERY, filter="{bad")


def test_search_on_an_empty_collection_returns_nothing(cols):
    name = unique_name()
    cols.create(name)
    assert cols.search(name, QUERY, top_k=5, rerank=True).hits == []


def test_delete_by_id(filled):
    cols, name = filled
    report = cols.delete(name, ["gravity", "nope", "gravity"])
    assert (report.deleted, report.missing) == (["gravity"], ["nope"])
    assert "gravity" not in {h.document_id for h in cols.search(name, "gravity force", top_k=50).hits}
    with pytest.raises(NotFoundError):
        cols.get(name, "gravity")
    with pytest.raises(InputError):
        cols.delete(name, [])


def test_matryoshka_collection_stores_and_searches_the_first_dimensions(cols, embedder):
    name = unique_name()
    assert cols.create(name, dimensions=32, chunk_size=64).info.dimensions == 32
    cols.upsert(name, DOCS[:2])
    hit = cols.search(name, QUERY, top_k=1).hits[0]
    query, chunk = embedder.encode(QUERY, query=True, dimensions=32), embedder.encode(hit.text, dimensions=32)
    assert hit.vector_score == pytest.approx(_cosine(query, chunk), abs=1e-4)


class _OtherModel:
    """An encoder that claims to be another model (or the same one at another size)."""

    def __init__(self, embedder, name: str, dimensions: int) -> None:
        self._embedder = embedder
        self.info = dataclasses.replace(embedder.info, name=name, dimensions=dimensions)

    def encode(self, *args, **kwargs):
        return self._embedder.encode(*args, **kwargs)

    def token_offsets(self, text):
        return self._embedder.token_offsets(text)


@pytest.mark.parametrize("rename,dimensions", [(True, 64), (False, 32)])
def test_a_collection_of_another_model_or_size_is_a_conflict(filled, embedder, rename, dimensions):
    cols, name = filled
    other = Collections(cols.store, _OtherModel(embedder, "Qwen/Qwen3-Embedding-8B" if rename else
                                                embedder.info.name, dimensions))
    for call in (lambda: other.search(name, QUERY), lambda: other.upsert(name, DOCS[:1]),
                 lambda: other.create(name, exist_ok=True)):
        with pytest.raises(ConflictError, match="was built with"):
            call()


def test_bad_input_is_refused_before_anything_is_written(filled):
    cols, name = filled
    with pytest.raises(InputError, match="'new2' has no text"):
        cols.upsert(name, [{"id": "new1", "text": "fine"}, {"id": "new2", "text": ""}])
    assert cols.describe(name).documents == 4
    report = cols.upsert(name, [{"id": "new1", "text": "fine"}, {"id": "", "text": "x"}], skip_invalid=True)
    assert report.added == 1 and len(report.skipped) == 1 and "empty" in report.skipped[0].reason
    for bad in (lambda: cols.search(name, QUERY, top_k=0), lambda: cols.search(name, " "),
                lambda: cols.search(name, QUERY, candidates=5000), lambda: cols.create("../x"),
                lambda: cols.create(unique_name(), index="ivf"), lambda: cols.create(unique_name(), dimensions=8),
                lambda: cols.upsert(name, "text")):
        with pytest.raises(InputError):
            bad()
    with pytest.raises(NotFoundError):
        cols.search("missing", QUERY)
    with pytest.raises(ConfigurationError, match="reranker"):
        Collections(cols.store, cols.embedder).search(name, QUERY, rerank=True)


# ---------------------------------------------------------------- kill -9 during `upsert`, then resume

CHILD = """
import sys, time
import q3embed.pipeline.ingest as ingest
from q3embed import Embedder
from q3embed.pipeline import Collections, Document
from q3embed.store import StoreConfig
ingest.BATCH_DOCUMENTS = 3
embedder = Embedder({model!r}, dtype="float32", device="cpu")
encode = embedder.encode
embedder.encode = lambda *a, **k: (time.sleep(0.05), encode(*a, **k))[1]  # a slow model: the kill lands mid-way
docs = [Document(f"d{{i}}", ("Sentence %d about the topic. " % i) * (1 + i % 4), {{"i": i}}) for i in range({n})]
Collections.open(StoreConfig(directory={root!r}), embedder).upsert("c", docs)
"""
N_DOCS = 300


def _docs_for_resume() -> list[Document]:
    return [Document(f"d{i}", (f"Sentence {i} about the topic. ") * (1 + i % 4), {"i": i}) for i in range(N_DOCS)]


def _committed(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT count(*) FROM documents").fetchone()[0]
    finally:
        db.close()


def test_kill_9_during_upsert_then_the_same_upsert_resumes(tmp_path, embedder, tiny_embedding_dir):
    setup = Collections(EmbeddedStore(tmp_path), embedder)
    setup.create("c", chunk_size=12, chunk_overlap=2)
    setup.close()
    code = CHILD.format(model=str(tiny_embedding_dir), root=str(tmp_path), n=N_DOCS)
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 90
    try:
        while _committed(tmp_path / "c" / "store.sqlite") < 15:
            assert child.poll() is None and time.monotonic() < deadline, "the ingest ended before the kill"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with Collections(EmbeddedStore(tmp_path), embedder) as cols:
        described = cols.describe("c")
        committed = described.documents
        assert 15 <= committed < N_DOCS
        for doc_id in ("d0", f"d{committed - 1}"):  # whole documents: every chunk, offsets into the text
            stored = cols.get("c", doc_id)
            text = next(d.text for d in _docs_for_resume() if d.id == doc_id)
            assert stored.chunks[0].start == 0 and stored.chunks[-1].end == len(text.rstrip())
        assert cols.search("c", "Sentence 3 about the topic", top_k=3).hits
        report = cols.upsert("c", _docs_for_resume())
        assert (report.unchanged, report.added) == (committed, N_DOCS - committed)
        assert cols.describe("c").documents == N_DOCS


# ---------------------------------------------------------------- through a running Engine (the server's way)


def test_collections_through_the_engine_match_the_direct_models(tmp_path, embedder, reranker):
    import asyncio
    import threading

    from q3embed.engine import Engine
    from q3embed.server.engine_adapters import EngineEncoder, EngineScorer

    engine = Engine(embedder, reranker)
    engine.start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        via_engine = Collections(EmbeddedStore(tmp_path), EngineEncoder(engine, loop), EngineScorer(engine, loop))
        via_engine.create("c", chunk_size=12, chunk_overlap=3)
        assert via_engine.upsert("c", DOCS).added == 4
        direct = Collections(via_engine.store, embedder, reranker)
        a = via_engine.search("c", QUERY, top_k=3, rerank=True)
        b = direct.search("c", QUERY, top_k=3, rerank=True)
        assert [(h.document_id, h.chunk_index) for h in a.hits] == [(h.document_id, h.chunk_index) for h in b.hits]
        np.testing.assert_allclose([h.vector_score for h in a.hits], [h.vector_score for h in b.hits], atol=1e-5)
        np.testing.assert_allclose([h.rerank_score for h in a.hits], [h.rerank_score for h in b.hits], atol=1e-5)

        async def on_the_loop():
            return via_engine.search("c", QUERY)

        with pytest.raises(RuntimeError, match="to_thread"):
            asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(timeout=30)
        via_engine.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        engine.stop()
