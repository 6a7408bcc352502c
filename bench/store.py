"""Collections: search latency of the vector stores at 100k x 1024, ingest throughput, search overhead.

    python bench/store.py                      # everything (a few minutes on 2 cores)
    python bench/store.py --stores flat --vectors 20000 --skip-ingest   # a quick look

1. Search latency, p50/p99 over --queries single queries (top-10), through the store's whole search
   path (index scan + SQLite join for text and metadata), for the embedded store with the exact
   flat index and with HNSW (plus its recall@10 against exact), and for Milvus Lite (FLAT);
   also with a metadata filter matching 10% of the chunks. Vectors: random unit vectors around
   1,000 random centres (cosine ~0.5 within a cluster, ~0 across); queries drawn the same way.
2. Ingest throughput (docs/s) of `Collections.upsert` with a model: read, chunk, embed, store; and
   the share of that time spent embedding.
3. The search path's share of an embed + search request: query embedding time (0.6B-shaped
   model) against the flat store's search time at 100k vectors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import checkpoint, stdlib_docstrings
from q3embed.store.embedded import EmbeddedStore
from q3embed.store.filters import parse_filter
from q3embed.store.protocol import ChunkRecord, CollectionInfo, DocumentRecord

CHUNKS_PER_DOC = 100


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, n_queries: int, d: int, per_cluster: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors around n / per_cluster random centres (embeddings cluster by topic;
    uniform random vectors have no neighbours worth finding, which makes recall meaningless)."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((max(1, n // per_cluster), d), dtype=np.float32))

    def around(count: int) -> np.ndarray:
        noise = unit(rng.standard_normal((count, d), dtype=np.float32))
        return unit(centres[rng.integers(0, len(centres), count)] + noise)

    return around(n), around(n_queries)


def documents(vectors: np.ndarray) -> list[DocumentRecord]:
    out = []
    for d in range(len(vectors) // CHUNKS_PER_DOC):
        block = vectors[d * CHUNKS_PER_DOC:(d + 1) * CHUNKS_PER_DOC]
        chunks = tuple(ChunkRecord(i, f"doc {d} chunk {i}", 0, 10, 8, v) for i, v in enumerate(block))
        out.append(DocumentRecord(f"doc{d}", f"h{d}", {"group": d % 10}, chunks))
    return out


def open_store(kind: str, root: Path):
    if kind == "milvus":
        from q3embed.store.milvus import MilvusStore

        return MilvusStore(str(root / "milvus.db"))
    return EmbeddedStore(root / "embedded")


def timed_searches(store, name, queries, where=None) -> list[float]:
    store.search(name, queries[0], 10, where)  # warm-up
    out = []
    for q in queries:
        t = time.perf_counter()
        store.search(name, q, 10, where)
        out.append(time.perf_counter() - t)
    return out


def bench_store(label: str, kind: str, index: str, vectors: np.ndarray, queries: np.ndarray, root: Path,
                exact: list[set] | None) -> dict:
    store = open_store(kind, root)
    name = f"bench-{index}"
    store.create_collection(CollectionInfo(name, "bench-random", vectors.shape[1], 512, 64, index=index))
    docs = documents(vectors)
    t = time.perf_counter()
    for first in range(0, len(docs), 10):
        store.write(name, docs[first:first + 10])
    store.flush(name)
    if kind == "embedded":
        store.search(name, queries[0], 10)  # HNSW: the graph is built as vectors arrive
    build = time.perf_counter() - t
    result = {"store": label, "vectors": len(vectors), "build_s": round(build, 1),
              "build_vectors_per_s": round(len(vectors) / build)}
    if kind == "embedded":
        store.close()  # saves the index file
        t = time.perf_counter()
        store = open_store(kind, root)
        store.search(name, queries[0], 10)
        result["reopen_s"] = round(time.perf_counter() - t, 2)
    result["search"] = percentiles(timed_searches(store, name, queries))
    where = parse_filter({"group": 3})
    result["search_filter_10pct"] = percentiles(timed_searches(store, name, queries[:50], where))
    if exact is not None:
        found = [{h.document_id + "/" + str(h.chunk_index) for h in store.search(name, q, 10)} for q in queries]
        result["recall_at_10"] = round(statistics.mean(len(a & b) / 10 for a, b in zip(found, exact, strict=True)), 4)
    store.drop_collection(name)
    store.close()
    print(json.dumps(result), flush=True)
    return result


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> list[set]:
    out = []
    for q in queries:
        top = np.argsort(-(vectors @ q))[:10]
        out.append({f"doc{i // CHUNKS_PER_DOC}/{i % CHUNKS_PER_DOC}" for i in top})
    return out


class CountingEncoder:
    """The Embedder, with the time spent in encode() added up."""

    def __init__(self, embedder) -> None:
        self.embedder, self.seconds = embedder, 0.0
        self.info = embedder.info

    def encode(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.embedder.encode(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t

    def token_offsets(self, text):
        return self.embedder.token_offsets(text)


def bench_ingest(shape: str, n_docs: int, root: Path) -> dict:
    from q3embed import Embedder
    from q3embed.pipeline import Collections, Document

    embedder = Embedder(str(checkpoint("embedding", shape)), device="cpu", max_length=512)
    embedder.encode(["warm up"] * 4)
    texts = stdlib_docstrings(n_docs)
    docs = [Document(f"d{i}", text) for i, text in enumerate(texts)]
    encoder = CountingEncoder(embedder)
    with Collections(EmbeddedStore(root / f"ingest-{shape}"), encoder) as cols:
        cols.create("ingest", chunk_size=256, chunk_overlap=32)
        report = cols.upsert("ingest", docs)
        queries = [f"How do I use {t.split()[0]}?" for t in texts[:10]]
        embed_times = []
        for q in queries:
            t = time.perf_counter()
            embedder.encode(q, query=True)
            embed_times.append(time.perf_counter() - t)
    result = {"ingest_model": f"qwen3-{shape}-random", "documents": report.documents, "chunks": report.chunks,
              "tokens": report.tokens, "seconds": round(report.seconds, 2),
              "docs_per_s": round(report.documents / report.seconds, 2),
              "embedding_share": round(encoder.seconds / report.seconds, 3),
              "query_embed": percentiles(embed_times)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--stores", default="flat,hnsw,milvus", help="any of flat, hnsw, milvus")
    parser.add_argument("--ingest", default="tiny:256,0.6B:32", help="SHAPE:DOCS,... for the ingest runs")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--out", type=Path, help="also write all results to this JSON file")
    args = parser.parse_args()
    vectors, queries = clustered(args.vectors, args.queries, args.dimensions)
    wanted = args.stores.split(",")
    exact = exact_top10(vectors, queries) if "hnsw" in wanted else None
    results: dict = {"stores": [], "ingest": []}
    root = Path(tempfile.mkdtemp(prefix="q3embed-bench-"))
    try:
        for label, kind, index in (("embedded flat", "embedded", "flat"), ("embedded hnsw", "embedded", "hnsw"),
                                   ("milvus-lite flat", "milvus", "flat")):
            if (index if kind == "embedded" else "milvus") in wanted:
                results["stores"].append(bench_store(label, kind, index, vectors, queries, root,
                                                     exact if index == "hnsw" else None))
        if not args.skip_ingest:
            for item in args.ingest.split(","):
                shape, n = item.split(":")
                results["ingest"].append(bench_ingest(shape, int(n), root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():  # Milvus Lite may still flush a file after its client closed
            time.sleep(2)
            shutil.rmtree(root, ignore_errors=True)
    flat = next((r for r in results["stores"] if r["store"] == "embedded flat"), None)
    big = next((r for r in results["ingest"] if r["ingest_model"] == "qwen3-0.6B-random"), None)
    if flat and big:
        embed, search = big["query_embed"]["p50_ms"], flat["search"]["p50_ms"]
        results["search_share_of_embed_plus_search"] = round(search / (embed + search), 4)
        print(json.dumps({"query_embed_p50_ms": embed, "search_p50_ms": search,
                          "search_share": results["search_share_of_embed_plus_search"]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
