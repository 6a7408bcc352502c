"""Models from the user's Ollama store: a manifest + blob layout written here as Ollama writes it
(manifests/<registry>/<namespace>/<model>/<tag> -> blobs/sha256-<hex>), resolved, loaded, served."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from q3embed import Embedder
from q3embed.engine import Engine
from q3embed.errors import ModelNotFoundError
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.gguf_writer import write_gguf
from q3embed.testing.server import running_server
from q3embed.weights.resolve import resolve_model

TEXTS = ["The capital of China is Beijing.", "Gravity is a force that attracts mass."]


def _pull(models: Path, gguf_file: Path, *manifest_path: str) -> Path:
    """What `ollama pull` leaves: the GGUF as a content-addressed blob, and a manifest naming it."""
    digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    blob = models / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf_file, blob)
    manifest = models.joinpath("manifests", *manifest_path)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "0" * 64},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "1" * 64, "size": 10},
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": blob.stat().st_size},
        ]}))
    return blob


@pytest.fixture(scope="module")
def gguf_file(tiny_embedding_dir, tmp_path_factory) -> Path:
    return write_gguf(tiny_embedding_dir, tmp_path_factory.mktemp("gguf") / "emb-F16.gguf", file_type="F16")


@pytest.fixture()
def store(tmp_path, gguf_file, monkeypatch) -> tuple[Path, Path]:
    models = tmp_path / "ollama-models"
    blob = _pull(models, gguf_file, "registry.ollama.ai", "dengcao", "Qwen3-Embedding-0.6B", "Q8_0")
    _pull(models, gguf_file, "registry.ollama.ai", "library", "qwen3-embedding", "0.6b")
    _pull(models, gguf_file, "registry.ollama.ai", "library", "qwen3-embedding", "latest")
    _pull(models, gguf_file, "hf.co", "Qwen", "Qwen3-Embedding-0.6B-GGUF", "Q8_0")
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    return models, blob


@pytest.mark.parametrize("name", [
    "ollama:dengcao/Qwen3-Embedding-0.6B:Q8_0",
    "dengcao/Qwen3-Embedding-0.6B:Q8_0",  # Ollama's own spelling, found in its store before the hub is asked
    "dengcao/qwen3-embedding-0.6b:q8_0",  # Ollama matches names without regard to case
    "ollama:qwen3-embedding:0.6b",  # the official library: registry.ollama.ai/library/...
    "ollama:qwen3-embedding",  # no tag is `latest`
    "hf.co/Qwen/Qwen3-Embedding-0.6B-GGUF:Q8_0",  # pulled from Hugging Face through Ollama
])
def test_names_resolve_to_the_pulled_blob(store, name):
    models, _ = store
    resolved = resolve_model(name)
    assert resolved.path.parent == models / "blobs" and resolved.path.name.startswith("sha256-")
    assert resolved.reason.startswith("Ollama store")


def test_a_tag_that_is_not_pulled_is_named_with_the_tags_that_are(store):
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("ollama:dengcao/Qwen3-Embedding-0.6B:Q4_K_M")
    message = str(caught.value)
    assert "dengcao/Qwen3-Embedding-0.6B:Q4_K_M" in message and "Q8_0" in message and "ollama pull" in message
    with pytest.raises(ModelNotFoundError, match="no tag of nobody/nothing is pulled"):
        resolve_model("ollama:nobody/nothing:F16")


def test_a_manifest_whose_blob_is_gone_says_to_pull_again(store):
    models, blob = store
    blob.unlink()
    with pytest.raises(ModelNotFoundError, match="missing .*ollama pull dengcao/Qwen3-Embedding-0.6B:Q8_0"):
        resolve_model("ollama:dengcao/Qwen3-Embedding-0.6B:Q8_0")


def test_the_store_defaults_to_the_home_folder(tmp_path, gguf_file, monkeypatch):
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    _pull(tmp_path / ".ollama" / "models", gguf_file, "registry.ollama.ai", "library", "qwen3-embedding", "0.6b")
    assert resolve_model("ollama:qwen3-embedding:0.6b").path.parent == tmp_path / ".ollama" / "models" / "blobs"


def test_an_ollama_model_embeds_as_its_gguf_file_and_is_served_under_its_ollama_name(store, gguf_file):
    import ollama

    options = dict(dtype="float32", device="cpu", max_length=64)
    pulled = Embedder("ollama:dengcao/Qwen3-Embedding-0.6B:Q8_0", **options)
    direct = Embedder(str(gguf_file), **options)
    np.testing.assert_array_equal(pulled.encode(TEXTS), direct.encode(TEXTS))
    with running_server(create_app(Engine(pulled), ServerConfig())) as url:
        client = ollama.Client(host=url)
        names = [m.model for m in client.list().models]
        assert names == ["ollama:dengcao/Qwen3-Embedding-0.6B:Q8_0"]
        assert client.show("dengcao/Qwen3-Embedding-0.6B:Q8_0").details.format == "gguf"
        out = client.embed(model="dengcao/Qwen3-Embedding-0.6B:Q8_0", input=TEXTS)  # the name `ollama run` took
        np.testing.assert_allclose(np.array(out.embeddings), direct.encode(TEXTS), atol=1e-6)
