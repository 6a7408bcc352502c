"""Client libraries against the real server, as their docs say to use a self-hosted endpoint:
openai, LangChain, LlamaIndex, cohere (v1 and v2), Ollama's listing calls, huggingface_hub's
InferenceClient at the base URL (TEI's POST /), Weaviate's inference-container contracts with the
bodies its Go modules send, the model list, and an API document the offline Swagger UI can read.
(The README's own examples run in test_readme_examples.py.)"""

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


DOCS = ["Beijing is the capital of China.", "Gravity is a force.", "Cats purr."]


def test_openai_langchain_and_llama_index_embed_what_the_engine_embeds(served):
    from langchain_openai import OpenAIEmbeddings
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding
    from openai import OpenAI

    url, embedder = served
    expected = embedder.encode(DOCS)
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    for asked in ({}, {"encoding_format": "float"}):  # unless told, the SDK asks for base64 and decodes it
        out = client.embeddings.create(model="qwen3-embedding:0.6b", input=DOCS, **asked)
        np.testing.assert_allclose([d.embedding for d in out.data], expected, atol=1e-5)
    assert out.model == "tiny-embedding0"  # an alias was asked for; the answer names the model
    lc = OpenAIEmbeddings(model="tiny-embedding0", base_url=url + "/v1", api_key="unused",
                          check_embedding_ctx_length=False)
    np.testing.assert_allclose(lc.embed_documents(DOCS), expected, atol=1e-5)
    li = OpenAILikeEmbedding(model_name="tiny-embedding0", api_base=url + "/v1", api_key="unused")
    np.testing.assert_allclose(li.get_text_embedding_batch(DOCS), expected, atol=1e-5)


def test_cohere_v1_and_v2_rerank_in_the_reranker_order(served):
    import cohere

    url, _ = served
    query = "What is the capital of China?"
    v1 = cohere.Client(api_key="unused", base_url=url).rerank(model="tiny-reranker0", query=query,
                                                              documents=DOCS, top_n=2)
    v2 = cohere.ClientV2(api_key="unused", base_url=url).rerank(model="tiny-reranker0", query=query,
                                                                documents=DOCS, top_n=2)
    assert [r.index for r in v1.results] == [r.index for r in v2.results] and len(v2.results) == 2
    assert v1.results[0].relevance_score >= v1.results[1].relevance_score
    with pytest.raises(cohere.core.ApiError) as caught:
        cohere.ClientV2(api_key="unused", base_url=url).rerank(model="rerank-v3.5", query=query, documents=DOCS)
    assert caught.value.status_code == 404 and "not served here" in str(caught.value.body)


def test_the_model_list_names_each_model_once_with_its_kind_and_aliases(served):
    url, _ = served
    data = httpx.get(url + "/v1/models", timeout=30).json()["data"]
    assert [(m["id"], m["kind"], m["kinds"]) for m in data] == [
        ("tiny-embedding0", "embedding", ["embedding"]), ("tiny-reranker0", "reranker", ["reranker"])]
    assert data[0]["aliases"] == ["qwen3-embedding:0.6b"] and data[1]["rerank_by"] == "qwen3-reranker"


# Weaviate's Go modules (usecases/modulecomponents/clients/transformers, modules/reranker-transformers)
# marshal these bodies: the unused response fields go out too, and pooling_strategy is always set.
def _weaviate_vector_body(text: str, task: str, dimensions: int | None = None) -> dict:
    config = {"pooling_strategy": "masked_mean", "task_type": task}
    if dimensions:
        config["dimensions"] = dimensions
    return {"text": text, "dims": 0, "vector": None, "error": "", "config": config}


def test_weaviate_text2vec_transformers_contract(served):
    url, embedder = served
    base = url + "/weaviate"
    for prefix in ("", "/query", "/passage"):
        for probe in ("live", "ready"):
            assert httpx.get(f"{base}{prefix}/.well-known/{probe}", timeout=30).status_code == 204
    meta = httpx.get(base + "/meta", timeout=30).json()
    assert meta["model"]["model_name"] == "tiny-embedding0" and "/" not in meta["model_path"]
    passage = httpx.post(base + "/vectors", json=_weaviate_vector_body(DOCS[0], "passage"), timeout=30).json()
    assert passage["text"] == DOCS[0] and passage["dim"] == passage["dims"] == 64
    np.testing.assert_allclose(passage["vector"], embedder.encode(DOCS[0]), atol=1e-5)
    query = httpx.post(base + "/vectors/", json=_weaviate_vector_body("capital?", "query"), timeout=30).json()
    np.testing.assert_allclose(query["vector"], embedder.encode("capital?", query=True), atol=1e-5)
    by_path = httpx.post(base + "/query/vectors", json={"text": "capital?"}, timeout=30).json()
    assert by_path["vector"] == query["vector"]  # a query URL embeds queries, whatever the body says
    small = httpx.post(base + "/vectors", json=_weaviate_vector_body(DOCS[0], "passage", 32), timeout=30).json()
    np.testing.assert_allclose(small["vector"], embedder.encode(DOCS[0], dimensions=32), atol=1e-5)
    batch = httpx.post(base + "/vectors", json={"texts": DOCS, "config": {"task_type": "passage"}}, timeout=30)
    assert batch.json()["dims"] == 64
    np.testing.assert_allclose(batch.json()["vectors"], embedder.encode(DOCS), atol=1e-5)
    wrong = httpx.post(base + "/vectors", json={"config": {"task_type": "passage"}}, timeout=30)
    assert wrong.status_code == 422 and "send `text`" in wrong.json()["error"]  # the {"error"} Weaviate reads


def test_weaviate_reranker_transformers_contract(served, reranker):
    url, _ = served
    body = {"query": "What is the capital of China?", "documents": DOCS, "property": ""}
    answer = httpx.post(url + "/weaviate/rerank", json=body, timeout=30).json()
    assert answer["query"] == body["query"] and [s["document"] for s in answer["scores"]] == DOCS
    np.testing.assert_allclose([s["score"] for s in answer["scores"]], reranker.score(body["query"], DOCS),
                               atol=1e-5)


def test_weaviate_probes_are_open_and_its_vectors_keyed_on_a_keyed_server(embedder):
    with running_server(create_app(Engine(embedder), ServerConfig(api_keys=("k1",)))) as url:
        assert httpx.get(url + "/weaviate/.well-known/ready", timeout=30).status_code == 204
        assert httpx.post(url + "/weaviate/vectors", json={"text": "x"}, timeout=30).status_code == 401
        keyed = httpx.post(url + "/weaviate/vectors", json={"text": "x"}, headers={"Authorization": "Bearer k1"},
                           timeout=30)
        assert keyed.status_code == 200
        missing = httpx.post(url + "/weaviate/rerank", json={"query": "q", "documents": ["d"]},
                             headers={"Authorization": "Bearer k1"}, timeout=30)
        assert missing.status_code == 404 and "no reranker" in missing.json()["error"]
