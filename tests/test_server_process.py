"""`q3embed serve` as users start it: a separate process, configuration printed, SIGTERM handled;
and a schemathesis run over the OpenAPI spec that must find no 5xx."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from q3embed import Embedder, Reranker
from q3embed.engine import Engine
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.server import running_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early: {process.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become healthy")


def test_serve_command_prints_config_and_finishes_in_flight_work_on_sigterm(tiny_embedding_dir):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("Q3EMBED_")}
    env |= {"Q3EMBED_API_KEY": "secret-1,secret-2", "Q3EMBED_DTYPE": "float32"}
    command = [sys.executable, "-m", "q3embed", "serve", "--model", str(tiny_embedding_dir), "--no-reranker",
               "--port", str(port), "--max-batch-tokens", "256"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        headers = {"Authorization": "Bearer secret-2"}
        # ~2000 inputs in batches of 256 tokens: the request is still running when SIGTERM comes.
        texts = [f"text number {i} " + "lorem ipsum " * 8 for i in range(2000)]
        result: dict[str, httpx.Response] = {}
        sender = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            url + "/v1/embeddings", json={"input": texts}, headers=headers, timeout=120)))
        sender.start()
        deadline = time.monotonic() + 30
        while "q3embed_batch_tokens_count" not in _metrics(url, headers) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        sender.join(120)
        assert result["r"].status_code == 200 and len(result["r"].json()["data"]) == len(texts)
        assert process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stderr.read()
    assert "configuration" in log and '"api_keys": "2 configured"' in log and "secret" not in log
    assert "Waiting for connections to close" in log or "Shutting down" in log


def _metrics(url: str, headers: dict[str, str]) -> str:
    text = httpx.get(url + "/metrics", headers=headers, timeout=5).text
    # The first batch is done once the histogram has a non-zero count.
    return text if "q3embed_batch_tokens_count 0.0" not in text else ""


@pytest.fixture(scope="module")
def schema_url(tiny_embedding_dir, tiny_reranker_dir):
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=128)
    reranker = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_length=256)
    config = ServerConfig(max_items_per_request=64, max_documents_per_rerank=64)
    with running_server(create_app(Engine(embedder, reranker), config)) as url:
        yield url


def test_schemathesis_finds_no_server_errors(schema_url):
    """Valid and invalid bodies for every operation of the OpenAPI spec: any answer but a 5xx. Strings
    may hold any code point (lone surrogates included) and NUL, not only what UTF-8 can carry."""
    schema = schemathesis.openapi.from_url(schema_url + "/openapi.json")
    schema.config.generation.update(codec=None, allow_x00=True)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    statuses: list[int] = []
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def exercise(case) -> None:
            response = case.call(base_url=schema_url, timeout=60)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text}")

        try:
            exercise()
        except Unsatisfiable:  # operations without a body may have no invalid variant
            assert mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() in ("GET", "DELETE")
    assert not failures, "\n".join(failures[:5])
    assert statuses.count(200) > 20 and sum(400 <= s < 500 for s in statuses) > 50  # both kinds were tried
