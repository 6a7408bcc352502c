"""The server under hostile traffic (docs/reliability.md), run for real on 127.0.0.1 over the tiny
models. Waiting is measured in batches the model ran (the gate's record), never in seconds."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from q3embed import Embedder
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.server import running_server
from test_server import _engine, _post, _wait

BUDGET = 64  # tokens per batch: a long request takes many batches


@pytest.fixture(scope="module")
def small_batches(tiny_embedding_dir) -> Embedder:
    return Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=64, max_batch_tokens=BUDGET)


@pytest.fixture
def gated(small_batches):
    engine, gate = _engine(small_batches, None, max_batch_tokens=BUDGET, max_request_tokens=4096)
    with running_server(create_app(engine, ServerConfig(max_items_per_request=200))) as url:
        yield url, engine, gate


def _long_request(count: int = 60) -> dict:
    return {"input": [f"long request text number {i} " + "word " * 40 for i in range(count)]}


def test_a_short_request_waits_about_one_batch_behind_a_long_one(gated, small_batches):
    url, engine, gate = gated
    gate.open.clear()
    with ThreadPoolExecutor(2) as pool:
        long = pool.submit(_post, url, "/v1/embeddings", _long_request())
        _wait(gate.entered.is_set, "the long request's first batch")
        calls_before = gate.calls
        short = pool.submit(_post, url, "/v1/embeddings", {"input": "a short query"})
        _wait(lambda: engine.queued_requests == 2, "the short request to be queued")
        gate.open.set()
        assert short.result().status_code == 200 and long.result().status_code == 200
    short_ids = tuple(small_batches.tokenize(["a short query"])[0])
    position = gate.seen.index(short_ids)
    batch_of_short = gate.batch_of[position]
    assert batch_of_short - calls_before <= 2, f"the short request waited {batch_of_short - calls_before} batches"
    assert max(gate.batch_of) >= 20  # while the long one took dozens


def test_a_disconnected_long_request_stops_computing(gated):
    url, engine, gate = gated
    gate.open.clear()  # the worker is held inside the request's first batch ...
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/embeddings", json=_long_request(), timeout=1.0)  # ... when its client leaves
    assert gate.entered.is_set()
    _wait(lambda: "q3embed_client_disconnects_total 1.0" in httpx.get(url + "/metrics").text, "the disconnect")
    gate.open.set()
    _wait(lambda: engine.queued_requests == 0, "the abandoned request to be dropped")
    assert gate.calls == 1, f"{gate.calls} batches of a request whose client had left"  # of ~60
    assert _post(url, "/v1/embeddings", {"input": "still serving"}).status_code == 200


def test_a_request_over_the_token_limit_is_413_before_any_work(gated):
    url, _, gate = gated
    answer = _post(url, "/v1/embeddings", _long_request(150))  # ~7,000 tokens > 4,096
    assert answer.status_code == 413
    message = answer.json()["error"]["message"]
    assert "--max-request-tokens" in message and "4096" in message
    assert gate.calls == 0
    tei = _post(url, "/embed", {"inputs": _long_request(150)["input"]})
    assert tei.status_code == 413 and tei.json()["error_type"] == "Validation"


# ---------------------------------------------------------------- text that cannot be encoded

SURROGATE = "bad \ud800 text"
EVERY_ENDPOINT = [
    ("/v1/embeddings", {"input": [SURROGATE]}),
    ("/v1/embeddings", {"input": "x", "instruction": SURROGATE}),
    ("/v1/embeddings", {"input": "x", "model": SURROGATE}),
    ("/v1/rerank", {"query": SURROGATE, "documents": ["d"]}),
    ("/v2/rerank", {"query": "q", "documents": [{"text": SURROGATE}]}),
    ("/embed", {"inputs": SURROGATE}),
    ("/rerank", {"query": "q", "texts": [SURROGATE]}),
    ("/tokenize", {"inputs": [SURROGATE]}),
    ("/api/embed", {"input": SURROGATE}),
    ("/api/embeddings", {"prompt": SURROGATE}),
    ("/v1/collections", {"name": SURROGATE}),
    ("/v1/collections/docs/documents", {"documents": [{"id": SURROGATE, "text": "t"}]}),
    ("/v1/collections/docs/documents", {"documents": [{"id": "a", "text": SURROGATE}]}),
    ("/v1/collections/docs/documents", {"documents": [{"id": "a", "text": "t", "metadata": {SURROGATE: 1}}]}),
    ("/v1/collections/docs/documents", {"documents": [{"id": "a", "text": "t", "metadata": {"k": [SURROGATE]}}]}),
    ("/v1/collections/docs/documents/delete", {"ids": [SURROGATE]}),
    ("/v1/collections/docs/search", {"query": SURROGATE}),
    ("/v1/collections/docs/search", {"query": "q", "filter": {"lang": SURROGATE}}),
]


@pytest.fixture(scope="module")
def full_server(tiny_embedding_dir, tiny_reranker_dir, tmp_path_factory):
    from q3embed import Reranker
    from q3embed.engine import Engine

    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=64)
    reranker = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_length=128)
    config = ServerConfig(store_dir=str(tmp_path_factory.mktemp("store")))
    with running_server(create_app(Engine(embedder, reranker), config)) as url:
        assert _post(url, "/v1/collections", {"name": "docs", "chunk_size": 16, "chunk_overlap": 2}).status_code == 201
        yield url


@pytest.mark.parametrize(("path", "body"), EVERY_ENDPOINT, ids=[f"{p} {sorted(b)}" for p, b in EVERY_ENDPOINT])
def test_lone_surrogates_are_a_4xx_naming_the_field_on_every_endpoint(full_server, path, body):
    answer = _post(full_server, path, body)
    assert 400 <= answer.status_code < 500, answer.text
    assert "not valid Unicode text" in answer.text and "lone surrogate" in answer.text


def test_deep_or_huge_metadata_is_refused_at_upsert_and_cannot_poison_a_collection(full_server):
    deep: dict = {"leaf": 1}
    for _ in range(300):
        deep = {"k": deep}
    answer = _post(full_server, "/v1/collections/docs/documents", {"documents": [{"id": "deep", "text": "t",
                                                                                   "metadata": deep}]})
    assert answer.status_code == 400 and "deeper than 8 levels" in answer.json()["error"]["message"]
    huge = {"documents": [{"id": "huge", "text": "t", "metadata": {"blob": "x" * 70_000}}]}
    answer = _post(full_server, "/v1/collections/docs/documents", huge)
    assert answer.status_code == 400 and "over the limit of 65536" in answer.json()["error"]["message"]
    ok = _post(full_server, "/v1/collections/docs/documents", {"documents": [{"id": "fine", "text": "cats purr",
                                                                               "metadata": {"a": {"b": [1, 2]}}}]})
    assert ok.status_code == 200
    assert _post(full_server, "/v1/collections/docs/search", {"query": "cats"}).status_code == 200
    assert httpx.get(full_server + "/v1/collections/docs/documents/fine", timeout=30).status_code == 200


def test_error_bodies_show_no_server_path(full_server):
    missing = _post(full_server, "/v1/collections/nope/search", {"query": "q"})
    assert missing.status_code == 404 and "/" not in missing.json()["error"]["message"]
    models = httpx.get(full_server + "/v1/models", timeout=30).json()["data"]
    assert all("/" not in m["id"] for m in models)


# ---------------------------------------------------------------- keys, slow clients, shutdown


def test_api_keys_empty_refused_commas_kept_utf8_matched(small_batches):
    from q3embed.cli.serve_command import _split
    from q3embed.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="an API key is empty"):
        ServerConfig(api_keys=("",))
    assert _split(["ab,cd"]) == ("ab,cd",)  # a flag is one key, commas and all
    assert _split("ab, cd") == ("ab", "cd")  # the environment twin is the list
    engine, _ = _engine(small_batches, None)
    with running_server(create_app(engine, ServerConfig(api_keys=("clé-ünïcode", "ab,cd")))) as url:
        for key in ("clé-ünïcode", "ab,cd"):
            answer = httpx.post(url + "/v1/embeddings", json={"input": "x"}, timeout=30,
                                headers={"Authorization": b"Bearer " + key.encode("utf-8")})
            assert answer.status_code == 200, key
        assert _post(url, "/v1/embeddings", {"input": "x"}, headers={"Authorization": "Bearer ab"}).status_code == 401


def test_a_body_that_stops_arriving_gets_408(small_batches):
    import socket
    from urllib.parse import urlparse

    engine, _ = _engine(small_batches, None)
    with running_server(create_app(engine, ServerConfig(body_timeout_s=0.5))) as url:
        where = urlparse(url)
        with socket.create_connection((where.hostname, where.port), timeout=10) as client:
            client.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n{\"input\": ")  # ... and nothing more
            reply = client.recv(65536).decode()
        assert reply.startswith("HTTP/1.1 408") and "--body-timeout" in reply
        assert _post(url, "/v1/embeddings", {"input": "x"}).status_code == 200


def test_past_the_graceful_timeout_in_flight_requests_get_503_in_their_shape(small_batches):
    engine, gate = _engine(small_batches, None)
    gate.open.clear()
    with ThreadPoolExecutor(2) as pool:
        with running_server(create_app(engine), graceful_timeout_s=1) as url:
            held = [pool.submit(_post, url, path, body) for path, body in
                    (("/v1/embeddings", {"input": "held"}), ("/api/embed", {"input": "held too"}))]
            _wait(lambda: engine.queued_requests == 2, "two requests held by the model")
            threading.Timer(3.0, gate.open.set).start()  # the model finishes after the server has given up
        openai_style, ollama_style = (future.result() for future in held)
    assert openai_style.status_code == 503 and "shutting down" in openai_style.json()["error"]["message"]
    assert ollama_style.status_code == 503 and "shutting down" in ollama_style.json()["error"]
