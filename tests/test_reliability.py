"""The server under hostile traffic (docs/reliability.md), run for real on 127.0.0.1 over the tiny
models. Waiting is measured in batches the model ran (the gate's record), never in seconds."""

from __future__ import annotations

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
