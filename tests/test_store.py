"""The VectorStore contract, run against both stores (embedded FAISS + SQLite, and Milvus Lite).

Random unit vectors, no model: these tests are about storing, replacing, deleting, filtering
and searching. The embedded store's crash safety and index upkeep are tested at the end.
"""

from __future__ import annotations

import numpy as np
import pytest

from q3embed.errors import ConflictError, InputError, NotFoundError
from q3embed.store.filters import parse_filter
from q3embed.store.protocol import CollectionInfo
from store_fixtures import (  # noqa: F401  (fixtures)
    info_for, make_document, milvus_store, module_store, store, unique_name, unit_vectors)

D = 16


def _filled(store, n_docs: int = 12, chunks: int = 3, index: str = "flat", seed: int = 0):
    name = unique_name()
    store.create_collection(info_for(name, D, index))
    vectors = unit_vectors(n_docs * chunks, D, seed).reshape(n_docs, chunks, D)
    docs = [make_document(f"doc{i}", vectors[i], {"i": i, "even": i % 2 == 0}) for i in range(n_docs)]
    store.write(name, docs)
    return name, vectors


def _brute_force(vectors: np.ndarray, query: np.ndarray, k: int) -> list[tuple[str, int]]:
    flat = vectors.reshape(-1, vectors.shape[-1])
    order = np.argsort(-(flat @ query), kind="stable")[:k]
    return [(f"doc{i // vectors.shape[1]}", int(i % vectors.shape[1])) for i in order]


def test_create_list_describe_drop(store):
    name = unique_name()
    created = store.create_collection(info_for(name))
    assert created.store == store.kind and created.name == name
    assert name in store.collection_names()
    info = store.collection_info(name)
    assert (info.model, info.dimensions, info.chunk_size, info.chunk_overlap) == ("test-model", D, 32, 4)
    assert store.counts(name).documents == 0
    with pytest.raises(ConflictError, match="already exists"):
        store.create_collection(info_for(name))
    store.drop_collection(name)
    assert name not in store.collection_names()
    with pytest.raises(NotFoundError):
        store.collection_info(name)
    with pytest.raises(NotFoundError):
        store.drop_collection(name)


def test_bad_names_never_reach_the_store(store):
    for bad in ("../evil", "a/b", "UPPER", "", ".hidden", "x" * 65, "sp ace"):
        with pytest.raises(InputError, match="collection name"):
            store.create_collection(info_for(bad))
        with pytest.raises(InputError):
            store.collection_info(bad)


def test_search_on_an_empty_collection_is_empty(store):
    name = unique_name()
    store.create_collection(info_for(name))
    assert store.search(name, unit_vectors(1, D)[0], 5) == []
    assert store.search(name, unit_vectors(1, D)[0], 5, parse_filter({"i": 1})) == []


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_search_ranks_by_cosine_and_returns_the_chunk(store, index):
    name, vectors = _filled(store, index=index)
    query = vectors[4, 1]
    hits = store.search(name, query, 5)
    assert (hits[0].document_id, hits[0].chunk_index) == ("doc4", 1)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert (hits[0].text, hits[0].start, hits[0].end) == ("doc4 chunk 1", 10, 19)
    assert hits[0].metadata == {"i": 4, "even": True}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if index == "flat":  # exact: the same order as brute force
        assert [(h.document_id, h.chunk_index) for h in hits] == _brute_force(vectors, query, 5)


def test_counts_hashes_and_get_document(store):
    name, _ = _filled(store, n_docs=5, chunks=2)
    counts = store.counts(name)
    assert (counts.documents, counts.chunks) == (5, 10)
    assert store.document_hashes(name, ["doc1", "doc3", "nope"]) == {"doc1": "hash-doc1", "doc3": "hash-doc3"}
    doc = store.get_document(name, "doc2")
    assert doc is not None and doc.content_hash == "hash-doc2" and doc.metadata == {"i": 2, "even": True}
    assert [(c.index, c.text, c.start, c.end) for c in doc.chunks] == [(0, "doc2 chunk 0", 0, 9),
                                                                       (1, "doc2 chunk 1", 10, 19)]
    assert store.get_document(name, "nope") is None


def test_rewriting_a_document_replaces_all_its_chunks(store):
    name, vectors = _filled(store, n_docs=4, chunks=3)
    new = unit_vectors(1, D, seed=9)
    store.write(name, [make_document("doc1", new, {"i": 100}, tag="-v2")])
    assert store.counts(name).chunks == 3 * 3 + 1
    doc = store.get_document(name, "doc1")
    assert [c.text for c in doc.chunks] == ["doc1 chunk 0-v2"] and doc.metadata == {"i": 100}
    hits = store.search(name, vectors[1, 2], 12)  # the old chunk's vector finds nothing of doc1's old text
    assert all(not (h.document_id == "doc1" and not h.text.endswith("-v2")) for h in hits)
    assert store.search(name, new[0], 1)[0].text == "doc1 chunk 0-v2"


def test_delete_removes_documents_and_reports_which_existed(store):
    name, vectors = _filled(store, n_docs=4, chunks=2)
    assert store.delete(name, ["doc0", "ghost", "doc2"]) == ["doc0", "doc2"]
    assert store.counts(name).documents == 2
    hits = store.search(name, vectors[0, 0], 8)
    assert {h.document_id for h in hits} == {"doc1", "doc3"}


def test_vectors_of_the_wrong_size_are_refused(store):
    name = unique_name()
    store.create_collection(info_for(name))
    with pytest.raises(InputError, match="dimensions"):
        store.write(name, [make_document("x", unit_vectors(1, D + 1))])
    assert store.counts(name).documents == 0


# ---------------------------------------------------------------- filters: same answers from both stores

FILTER_DOCS = {
    "s_en": {"lang": "en", "year": 2020, "src": {"kind": "web"}},
    "s_fr": {"lang": "fr", "year": 2023, "score": 0.5},
    "s_de": {"lang": "de", "year": 2019.5, "flag": True},
    "s_none": {},
    "s_num": {"lang": 1, "flag": False, "year": "2021"},
    "s_one": {"flag": 1, "src": {"kind": "book"}, "lang": "é\"q"},
}

FILTER_CASES = [
    ({"lang": "en"}, {"s_en"}),
    ({"lang": "é\"q"}, {"s_one"}),
    ({"lang": {"$ne": "en"}}, {"s_fr", "s_de", "s_num", "s_one"}),  # a missing field never matches
    ({"lang": {"$in": ["en", "de"]}}, {"s_en", "s_de"}),
    ({"lang": {"$nin": ["en", "de"]}}, {"s_fr", "s_num", "s_one"}),
    ({"year": {"$gte": 2020}}, {"s_en", "s_fr"}),  # the string "2021" is not a number
    ({"year": {"$gt": 2019, "$lt": 2021}}, {"s_en", "s_de"}),
    ({"year": "2021"}, {"s_num"}),
    ({"lang": {"$gt": "en"}}, {"s_fr", "s_one"}),  # strings compare with strings only, by code point
    ({"flag": True}, {"s_de", "s_one"}),  # booleans are the numbers 1 and 0
    ({"flag": 0}, {"s_num"}),
    ({"src.kind": "web"}, {"s_en"}),
    ({"src.kind": {"$ne": "web"}}, {"s_one"}),
    ({"$or": [{"lang": "en"}, {"year": {"$lt": 2020}}]}, {"s_en", "s_de"}),
    ({"$and": [{"year": {"$gte": 2019}}, {"lang": {"$in": ["fr", "de"]}}]}, {"s_fr", "s_de"}),
    ({"lang": "en", "year": 2023}, set()),
    ({"score": 0.5}, {"s_fr"}),
    ({"lang": {"$in": ["en", 1]}}, {"s_en", "s_num"}),  # strings match strings, numbers numbers
    ({"flag": {"$in": [True, "x"]}}, {"s_de", "s_one"}),
    # the documented limit, MAX_IN_VALUES = 1024 (an OR per value once broke SQLite's expression depth at 496)
    ({"lang": {"$in": [f"v{i}" for i in range(1022)] + ["en", "fr"]}}, {"s_en", "s_fr"}),
    ({"lang": {"$nin": [f"v{i}" for i in range(1023)] + ["en"]}}, {"s_fr", "s_de", "s_num", "s_one"}),
]


@pytest.fixture(scope="module")
def filter_collection(module_store):
    store, name = module_store, unique_name("f")
    store.create_collection(info_for(name))
    vectors = unit_vectors(len(FILTER_DOCS), D, seed=3)
    store.write(name, [make_document(doc_id, vectors[i:i + 1], meta) for i, (doc_id, meta) in enumerate(FILTER_DOCS.items())])
    return store, name


@pytest.mark.parametrize("spec,expected", FILTER_CASES, ids=[str(c[0])[:60] for c in FILTER_CASES])
def test_filters_give_the_documented_answer(filter_collection, spec, expected):
    store, name = filter_collection
    hits = store.search(name, unit_vectors(1, D, seed=5)[0], 50, parse_filter(spec))
    assert {h.document_id for h in hits} == expected


def test_a_reopened_store_serves_what_was_written(store):
    name, vectors = _filled(store, n_docs=3, chunks=2)
    if store.kind == "embedded":
        store.close()
        reopened = type(store)(store.location)
    else:  # a second client: as another process would connect
        reopened = type(store)(store.location)
    try:
        assert reopened.collection_info(name) == store.collection_info(name)
        assert reopened.search(name, vectors[2, 1], 1)[0].document_id == "doc2"
        assert reopened.counts(name).documents == 3
    finally:
        if store.kind == "embedded":
            reopened.close()
