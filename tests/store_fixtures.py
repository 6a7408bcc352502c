"""Shared pieces of the store and collection tests: both stores behind one fixture, random records."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from q3embed.store.embedded import EmbeddedStore
from q3embed.store.protocol import ChunkRecord, CollectionInfo, DocumentRecord, VectorStore

STORE_KINDS = ("embedded", "milvus")
_names = itertools.count()


@pytest.fixture(scope="session")
def milvus_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    """One Milvus Lite server for the whole session: starting one takes about a second."""
    from q3embed.store.milvus import MilvusStore

    store = MilvusStore(str(tmp_path_factory.mktemp("milvus") / "test.db"))
    yield store
    store.close()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "embedded":
        embedded = EmbeddedStore(tmp_path / "store")
        yield embedded
        embedded.close()
    else:
        milvus = request.getfixturevalue("milvus_store")
        before = set(milvus.collection_names())
        yield milvus
        for name in set(milvus.collection_names()) - before:  # what this test made
            milvus.drop_collection(name)


@pytest.fixture(scope="module", params=STORE_KINDS)
def module_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    """Like `store`, for fixtures that fill a collection once and share it between tests."""
    if request.param == "embedded":
        embedded = EmbeddedStore(tmp_path_factory.mktemp("store"))
        yield embedded
        embedded.close()
    else:
        yield request.getfixturevalue("milvus_store")


def unique_name(prefix: str = "c") -> str:
    return f"{prefix}{next(_names)}"


def info_for(name: str, dimensions: int = 16, index: str = "flat") -> CollectionInfo:
    return CollectionInfo(name=name, model="test-model", dimensions=dimensions, chunk_size=32, chunk_overlap=4,
                          index=index)


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_document(doc_id: str, vectors: np.ndarray, metadata: dict | None = None, tag: str = "") -> DocumentRecord:
    chunks = tuple(ChunkRecord(i, f"{doc_id} chunk {i}{tag}", 10 * i, 10 * i + 9, 5, v) for i, v in enumerate(vectors))
    return DocumentRecord(doc_id, f"hash-{doc_id}{tag}", metadata or {}, chunks)
