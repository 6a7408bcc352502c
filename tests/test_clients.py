"""Client libraries against the real server, as their docs say to use a self-hosted endpoint:
Ollama's listing calls, huggingface_hub's InferenceClient at the base URL (TEI's POST /), the
offline model name, and an API document the offline Swagger UI can read."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from q3embed import Embedder, Reranker
from q3embed.engine import Engine
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.server import running_server


@pytest.fixture(scope="module")
def served(tiny_embedding_dir, tiny_reranker_dir):
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=64)
    reranker = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_length=128)
    config = ServerConfig(served_model_names=("qwen3-embedding:0.6b",))
    with running_server(create_app(Engine(embedder, reranker), config)) as url:
        yield url, embedder


def test_ollama_client_lists_shows_and_embeds(served):
    import ollama

    url, embedder = served
    client = ollama.Client(host=url)
    listed = client.list().models
    names = [m.model for m in listed]
    assert names == ["tiny-embedding0", "tiny-reranker0"] and listed[0].details.family == "qwen3"
    shown = client.show("qwen3-embedding:0.6b")  # an alias picks the same model
    assert "embedding" in shown.capabilities and shown.modelinfo["qwen3.embedding_length"] == 64
    assert [m.model for m in client.ps().models] == names
    vectors = client.embed(model=names[0], input=["hello", "world"]).embeddings
    np.testing.assert_allclose(vectors, embedder.encode(["hello", "world"]), atol=1e-5)
    with pytest.raises(ollama.ResponseError, match="not served here"):
        client.show("llama3")
    assert httpx.get(url + "/api/version", timeout=30).json()["version"]


def test_huggingface_inference_client_at_the_base_url(served):
    from huggingface_hub import InferenceClient

    url, embedder = served
    client = InferenceClient(model=url)
    np.testing.assert_allclose(client.feature_extraction("hello")[0], embedder.encode("hello"), atol=1e-5)
    scores = client.sentence_similarity("cats purr", other_sentences=["cats meow", "stocks fell"])
    vectors = embedder.encode(["cats purr", "cats meow", "stocks fell"])
    np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)
    wrong = httpx.post(url + "/", json={"inputs": "x", "truncation_direction": "Left"}, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error_type"] == "Validation"  # TEI's error shape at /


def test_the_api_document_is_one_the_offline_swagger_ui_reads(served):
    url, _ = served
    document = httpx.get(url + "/openapi.json", timeout=30).json()
    assert document["openapi"].startswith("3.0.")  # Swagger UI 4.15 renders nothing for 3.1
    for path in ("/v1/embeddings", "/v1/rerank", "/", "/similarity", "/api/tags", "/api/show"):
        assert path in document["paths"], path


def test_the_bundled_model_answers_to_its_hub_id_offline():
    from q3embed.weights.resolve import MINILM_ID, bundled_minilm_dir, resolve_model

    resolved = resolve_model(MINILM_ID)
    assert resolved.path == bundled_minilm_dir() and resolved.name == MINILM_ID
    assert Embedder(MINILM_ID, device="cpu").info.name == MINILM_ID
