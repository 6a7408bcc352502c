"""The HTTP server, run for real (uvicorn on 127.0.0.1) over the tiny models.

Every answer is compared with the offline engine's result for the same input.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from q3embed import Embedder, Reranker
from q3embed.engine import Engine, QueueLimits
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.server import running_server

from texts import MIXED_TEXTS

MAX_LENGTH = 64


class GatedEmbed:
    """Wraps the model's forward pass: can hold the worker, records what it computed, injects faults."""

    def __init__(self, embed) -> None:
        self.embed = embed
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.calls = 0
        self.seen: list[tuple[int, ...]] = []
        self.batch_of: list[int] = []  # for each sequence in `seen`, the call (1, 2, ...) that computed it
        self.fail_token: int | None = None

    def __call__(self, sequences):
        self.entered.set()
        assert self.open.wait(60), "the test never opened the gate"
        self.calls += 1
        self.seen.extend(tuple(s) for s in sequences)
        self.batch_of.extend([self.calls] * len(sequences))
        if self.fail_token is not None and any(self.fail_token in s for s in sequences):
            raise RuntimeError("injected fault")
        return self.embed(sequences)


@pytest.fixture(scope="module")
def short_embedder(tiny_embedding_dir) -> Embedder:
    return Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def short_reranker(tiny_reranker_dir) -> Reranker:
    return Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_length=256)


def _engine(embedder, reranker, **limits) -> tuple[Engine, GatedEmbed]:
    gate = GatedEmbed(embedder.forward)
    embedder.forward = gate  # the one model call the engine's worker makes, wrapped for this engine only
    try:
        engine = Engine(embedder, reranker, QueueLimits(**limits) if limits else None)
    finally:
        del embedder.forward  # the shared embedder's own calls stay direct
    return engine, gate


@pytest.fixture
def served(short_embedder, short_reranker) -> Iterator[tuple[str, Engine, GatedEmbed]]:
    engine, gate = _engine(short_embedder, short_reranker)
    with running_server(create_app(engine, ServerConfig(max_items_per_request=40, max_body_bytes=200_000))) as url:
        yield url, engine, gate


@pytest.fixture
def url(served) -> str:
    return served[0]


def _post(url: str, path: str, body: object, headers: dict | None = None, **kwargs) -> httpx.Response:
    """JSON as a client library sends it: ASCII with escapes, so that a lone surrogate travels too."""
    return httpx.post(url + path, content=json.dumps(body), timeout=60,
                      headers={"content-type": "application/json", **(headers or {})}, **kwargs)


def _close(a, b, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), atol=tol)


# ---------------------------------------------------------------- OpenAI API


def test_openai_client_float_base64_and_dimensions(url, short_embedder):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    model = short_embedder.info.name
    expected = short_embedder.encode(MIXED_TEXTS)
    default = client.embeddings.create(model=model, input=MIXED_TEXTS)  # the client asks for base64
    floats = client.embeddings.create(model=model, input=MIXED_TEXTS, encoding_format="float")
    _close([d.embedding for d in default.data], expected)
    _close([d.embedding for d in floats.data], expected)
    assert [d.index for d in floats.data] == list(range(len(MIXED_TEXTS)))
    token_total = sum(len(ids) for ids in short_embedder.tokenize(MIXED_TEXTS))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == token_total
    small = client.embeddings.create(model=model, input="The capital of China is Beijing.", dimensions=32)
    _close(small.data[0].embedding, short_embedder.encode("The capital of China is Beijing.", dimensions=32))


def test_raw_base64_is_little_endian_float32(url, short_embedder):
    body = _post(url, "/v1/embeddings", {"input": "hello", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    _close(vector, short_embedder.encode("hello"))


def test_queries_with_input_type_and_instruction(url, short_embedder):
    plain = _post(url, "/v1/embeddings", {"input": ["what is rust?"], "input_type": "query"}).json()
    _close(plain["data"][0]["embedding"], short_embedder.encode_queries(["what is rust?"])[0])
    task = "Given a question, retrieve code"
    custom = _post(url, "/v1/embeddings", {"input": ["sort a list"], "instruction": task}).json()
    _close(custom["data"][0]["embedding"], short_embedder.encode_queries(["sort a list"], instruction=task)[0])


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"input": [[1, 2, 3]]}, 400, "check_embedding_ctx_length=False"),
    ({"input": [1, 2, 3]}, 400, "token-id arrays"),
    ({"input": ""}, 400, "empty string"),
    ({"input": []}, 400, "empty list"),
    ({"input": ["ok", ""]}, 400, "input 1"),
    ({"input": ["ok", "bad \ud800"]}, 422, "body.input.1 is not valid Unicode text"),
    ({"input": "x", "instruction": "\udfff"}, 422, "body.instruction is not valid Unicode text"),
    ({"input": "x", "dimensions": 16}, 400, "dimensions must be from 32"),
    ({"input": "x", "dimensions": 4096}, 400, "dimensions must be from 32"),
    ({"input": "x", "model": "text-embedding-3-small"}, 404, "not served here"),
    ({"input": 5}, 422, "input"),
    ({"input": "x", "dimensions": "big"}, 422, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
    ({"input": ["a"] * 41}, 400, "limit is 40"),
    ({"input": "word " * 200, "truncate": False}, 400, "over the maximum of 64"),
    ({}, 422, "input"),
])
def test_embedding_errors_are_clear_4xx(url, body, status, needle):
    response = _post(url, "/v1/embeddings", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_long_input_is_truncated_by_default(url, short_embedder):
    text = "word " * 200
    body = _post(url, "/v1/embeddings", {"input": text}).json()
    assert body["usage"]["total_tokens"] == MAX_LENGTH
    _close(body["data"][0]["embedding"], short_embedder.encode(text))


def test_malformed_json_and_large_body(url):
    bad = httpx.post(url + "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and "JSON" in bad.json()["error"]["message"]
    big = _post(url, "/v1/embeddings", {"input": "x" * 300_000})
    assert big.status_code == 413 and "limit of 200000 bytes" in big.json()["error"]["message"]
    assert httpx.get(url + "/no/such/route").status_code == 404


def test_models_health_metrics_and_offline_docs(url, short_embedder, short_reranker):
    models = httpx.get(url + "/v1/models").json()["data"]
    # a model loaded from a local path is known by its directory name: a server never shows its file system
    assert [m["id"] for m in models] == [Path(short_embedder.info.name).name, Path(short_reranker.info.name).name]
    assert not any("/" in m["id"] or any("/" in a for a in m["aliases"]) for m in models)
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    _post(url, "/v1/embeddings", {"input": "count me"})
    metrics = httpx.get(url + "/metrics").text
    for name in ("q3embed_requests_total", "q3embed_request_duration_seconds_bucket", "q3embed_queue_requests",
                 "q3embed_batch_tokens_bucket", "q3embed_tokens_total", "q3embed_batch_tokens_per_second"):
        assert name in metrics
    assert 'endpoint="/v1/embeddings",status="200"' in metrics
    docs = httpx.get(url + "/docs").text
    assert "/docs/static/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert httpx.get(url + "/docs/static/swagger-ui-bundle.js").status_code == 200
    assert "/v1/embeddings" in httpx.get(url + "/openapi.json").json()["paths"]


# ---------------------------------------------------------------- rerank APIs


DOCS = ["The capital of China is Beijing.", "Gravity is a force.", "Beijing is a city in China.", "Cats purr."]


def test_cohere_rerank_shape_and_scores(url, short_reranker):
    query = "What is the capital of China?"
    expected = short_reranker.rerank(query, DOCS)
    body = _post(url, "/v1/rerank", {"query": query, "documents": DOCS[:2] + [{"text": d} for d in DOCS[2:]],
                                     "return_documents": True, "top_n": 3}).json()
    assert [r["index"] for r in body["results"]] == [r.index for r in expected[:3]]
    _close([r["relevance_score"] for r in body["results"]], [r.score for r in expected[:3]])
    assert body["results"][0]["document"] == {"text": DOCS[expected[0].index]}
    tokens = short_reranker.tokenize(query, DOCS).tokens
    assert body["usage"]["total_tokens"] == tokens and body["model"] == Path(short_reranker.info.name).name
    v2 = _post(url, "/v2/rerank", {"query": query, "documents": DOCS}).json()
    assert "document" not in v2["results"][0] and len(v2["results"]) == len(DOCS)


def test_rerank_instruction_and_errors(url, short_reranker):
    task = "Given a question, find the answer"
    body = _post(url, "/v1/rerank", {"query": "q?", "documents": DOCS, "instruction": task}).json()
    expected = short_reranker.score("q?", DOCS, instruction=task)
    _close([expected[r["index"]] for r in body["results"]], [r["relevance_score"] for r in body["results"]])
    assert _post(url, "/v1/rerank", {"query": "", "documents": DOCS}).status_code == 400
    assert _post(url, "/v1/rerank", {"query": "q", "documents": []}).status_code == 400
    assert _post(url, "/v1/rerank", {"query": "q", "documents": DOCS, "top_n": 0}).status_code == 400
    assert _post(url, "/v1/rerank", {"query": "q", "documents": [{"title": "no text"}]}).status_code == 422
    assert _post(url, "/v1/rerank", {"query": "q", "documents": DOCS, "model": "other"}).status_code == 404


def test_rerank_without_a_reranker_is_404(short_embedder):
    engine, _ = _engine(short_embedder, None)
    with running_server(create_app(engine)) as url:
        response = _post(url, "/v1/rerank", {"query": "q", "documents": ["d"]})
        assert response.status_code == 404 and "--reranker" in response.json()["error"]["message"]


# ---------------------------------------------------------------- TEI and Ollama


def test_tei_embed_rerank_tokenize_info(url, short_embedder, short_reranker):
    vectors = _post(url, "/embed", {"inputs": ["a cat", "a dog"]}).json()
    _close(vectors, short_embedder.encode(["a cat", "a dog"]))
    queries = _post(url, "/embed", {"inputs": "a cat", "prompt_name": "query"}).json()
    _close(queries[0], short_embedder.encode_queries("a cat"))
    too_long = _post(url, "/embed", {"inputs": "word " * 200})  # TEI's default: truncate=false
    assert too_long.status_code == 400 and too_long.json()["error_type"] == "Validation"
    ranked = _post(url, "/rerank", {"query": "capital?", "texts": DOCS, "return_text": True}).json()
    scores = short_reranker.score("capital?", DOCS)
    assert [r["index"] for r in ranked] == sorted(range(len(DOCS)), key=lambda i: -scores[i])
    assert ranked[0]["text"] == DOCS[ranked[0]["index"]]
    raw = _post(url, "/rerank", {"query": "capital?", "texts": DOCS, "raw_scores": True}).json()
    _close([1 / (1 + np.exp(-r["score"])) for r in raw], [scores[r["index"]] for r in raw], tol=1e-5)
    tokens = _post(url, "/tokenize", {"inputs": "héllo 世界"}).json()[0]
    assert [t["id"] for t in tokens] == short_embedder.tokenize(["héllo 世界"])[0]
    assert "".join(t["text"] for t in tokens) == "héllo 世界" and tokens[-1]["special"]
    info = httpx.get(url + "/info").json()
    assert info["max_input_length"] == MAX_LENGTH and info["model_type"]["embedding"]["pooling"] == "last_token"


def test_ollama_embed_and_embeddings(url, short_embedder):
    body = _post(url, "/api/embed", {"model": short_embedder.info.name, "input": ["a", "b"]}).json()
    _close(body["embeddings"], short_embedder.encode(["a", "b"]))
    assert body["prompt_eval_count"] == sum(len(t) for t in short_embedder.tokenize(["a", "b"]))
    legacy = _post(url, "/api/embeddings", {"prompt": "a"}).json()
    _close(legacy["embedding"], short_embedder.encode("a", normalize=False))
    missing = _post(url, "/api/embed", {"model": "llama3", "input": "a"})
    assert missing.status_code == 404 and "not served" in missing.json()["error"]


# ---------------------------------------------------------------- many clients, faults, limits


def _wait(condition, what: str, timeout: float = 30.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_32_concurrent_clients_are_batched_and_each_gets_its_own_answer(served, short_embedder):
    url, engine, gate = served
    texts = [[f"client {c} text {i} " + "lorem " * (c % 7) for i in range(1 + c % 3)] for c in range(32)]
    gate.open.clear()
    with ThreadPoolExecutor(33) as pool:
        blocker = pool.submit(_post, url, "/v1/embeddings", {"input": "hold the worker"})
        _wait(gate.entered.is_set, "the worker to take the first request")
        answers = [pool.submit(_post, url, "/v1/embeddings", {"input": t}) for t in texts]
        _wait(lambda: engine.queued_requests == 33, "32 queued requests behind the blocker")
        gate.open.set()
        assert blocker.result().status_code == 200
        for client_texts, answer in zip(texts, answers, strict=True):
            _close([d["embedding"] for d in answer.result().json()["data"]], short_embedder.encode(client_texts))
    assert gate.calls == 2  # the blocker, then all 32 requests merged into one packed batch


def test_a_model_fault_fails_only_its_batch(served, short_embedder):
    url, engine, gate = served
    gate.fail_token = short_embedder.tokenize(["poison"])[0][0]
    failed = _post(url, "/v1/embeddings", {"input": ["fine", "poison"]})
    assert failed.status_code == 500 and "injected fault" in failed.json()["error"]["message"]
    ok = _post(url, "/v1/embeddings", {"input": ["fine"]})
    assert ok.status_code == 200 and httpx.get(url + "/health").status_code == 200


def test_a_disconnected_client_has_its_queued_work_dropped(served, short_embedder):
    url, engine, gate = served
    gate.open.clear()
    with ThreadPoolExecutor(2) as pool:
        blocker = pool.submit(_post, url, "/v1/embeddings", {"input": "hold the worker"})
        _wait(gate.entered.is_set, "the worker to take the first request")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/embeddings", json={"input": "abandoned text"}, timeout=0.5)
        _wait(lambda: engine.queued_requests == 1, "the abandoned job to leave the queue")
        gate.open.set()
        assert blocker.result().status_code == 200
    abandoned = tuple(short_embedder.tokenize(["abandoned text"])[0])
    assert abandoned not in gate.seen
    assert "q3embed_client_disconnects_total 1.0" in httpx.get(url + "/metrics").text


def test_a_full_queue_answers_429_with_retry_after(short_embedder):
    engine, gate = _engine(short_embedder, None, max_queued_requests=3)  # the one in progress counts too
    gate.open.clear()
    with running_server(create_app(engine)) as url, ThreadPoolExecutor(4) as pool:
        running = pool.submit(_post, url, "/v1/embeddings", {"input": "in progress"})
        _wait(gate.entered.is_set, "the worker to take the first request")
        queued = [pool.submit(_post, url, "/v1/embeddings", {"input": f"queued {i}"}) for i in range(2)]
        _wait(lambda: engine.queued_requests == 3, "a full queue")
        refused = _post(url, "/v1/embeddings", {"input": "one too many"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        gate.open.set()
        assert [f.result().status_code for f in [running, *queued]] == [200, 200, 200]


def test_api_keys(short_embedder):
    engine, _ = _engine(short_embedder, None)
    with running_server(create_app(engine, ServerConfig(api_keys=("k-one", "k-two")))) as url:
        assert _post(url, "/v1/embeddings", {"input": "x"}).status_code == 401
        wrong = _post(url, "/v1/embeddings", {"input": "x"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = _post(url, "/v1/embeddings", {"input": "x"}, headers={"Authorization": "Bearer k-two"})
        assert right.status_code == 200
        assert _post(url, "/embed", {"inputs": "x"}, headers={"X-API-Key": "k-one"}).status_code == 200
        assert httpx.get(url + "/health").status_code == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key="k-one")
        assert len(client.embeddings.create(model=short_embedder.info.name, input="x").data) == 1


def test_a_stopped_engine_is_unhealthy_and_answers_503(served):
    url, engine, _ = served
    engine.stop()
    assert httpx.get(url + "/health").status_code == 503
    response = _post(url, "/v1/embeddings", {"input": "x"})
    assert response.status_code == 503 and "shutting down" in response.json()["error"]["message"]


# ---------------------------------------------------------------- collections


def test_collections_over_http(short_embedder, short_reranker, tmp_path):
    engine, _ = _engine(short_embedder, short_reranker)
    with running_server(create_app(engine, ServerConfig(store_dir=str(tmp_path)))) as url:
        created = _post(url, "/v1/collections", {"name": "docs", "chunk_size": 32, "chunk_overlap": 4})
        assert created.status_code == 201 and created.json()["dimensions"] == short_embedder.dimensions
        assert _post(url, "/v1/collections", {"name": "docs"}).status_code == 409
        assert _post(url, "/v1/collections", {"name": "../etc"}).status_code == 400
        assert _post(url, "/v1/collections", {"name": "x", "chunk_sise": 3}).status_code == 422
        documents = [{"id": f"d{i}", "text": text, "metadata": {"lang": "zh" if i == 2 else "en"}}
                     for i, text in enumerate(DOCS[:2] + ["北京是中国的首都。", DOCS[3]])]
        report = _post(url, "/v1/collections/docs/documents", {"documents": documents}).json()
        assert report["added"] == 4 and report["chunks"] >= 4
        again = _post(url, "/v1/collections/docs/documents", {"documents": documents}).json()
        assert again["unchanged"] == 4 and again["added"] == 0
        hits = _post(url, "/v1/collections/docs/search", {"query": DOCS[1], "top_k": 2}).json()["hits"]
        assert hits[0]["document_id"] == "d1" and hits[0]["text"] == DOCS[1]
        expected = short_embedder.encode_queries(DOCS[1]) @ short_embedder.encode(DOCS[1])
        assert abs(hits[0]["vector_score"] - float(expected)) < 1e-4
        filtered = _post(url, "/v1/collections/docs/search", {"query": "capital", "filter": {"lang": "zh"}}).json()
        assert [h["document_id"] for h in filtered["hits"]] == ["d2"]
        reranked = _post(url, "/v1/collections/docs/search", {"query": "capital", "rerank": True}).json()
        assert all(h["rerank_score"] is not None for h in reranked["hits"])
        assert httpx.get(url + "/v1/collections/docs/documents/d0").json()["id"] == "d0"
        deleted = _post(url, "/v1/collections/docs/documents/delete", {"ids": ["d0", "nope"]}).json()
        assert deleted == {"deleted": ["d0"], "missing": ["nope"]}
        assert httpx.get(url + "/v1/collections/docs/documents/d0").status_code == 404
        assert httpx.get(url + "/v1/collections").json()["collections"][0]["name"] == "docs"
        assert httpx.delete(url + "/v1/collections/docs").status_code == 200
        missing = _post(url, "/v1/collections/docs/search", {"query": "x"})
        assert missing.status_code == 404 and "docs" in missing.json()["error"]["message"]
