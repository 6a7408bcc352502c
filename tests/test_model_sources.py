"""Where models come from, offline: a cache layout for each source written here (Hugging Face,
ModelScope, the Ollama store), the one resolution order (path, caches, download), the download
calls each hub's package receives, and the message when nothing is found."""

from __future__ import annotations

import sys

import pytest
from hubs import write_hf_cache, write_modelscope_cache
from test_ollama_store import _pull

from q3embed import Embedder
from q3embed.cli import main
from q3embed.errors import ModelNotFoundError
from q3embed.testing.gguf_writer import write_gguf
from q3embed.weights.resolve import QWEN3_EMBEDDING_DEFAULT, resolve_model

GGUF_REPO = "Qwen/Qwen3-Embedding-0.6B-GGUF"


@pytest.fixture()
def model_files(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_a_model_in_the_hugging_face_cache_is_found_without_a_download(hubs, model_files):
    snapshot = write_hf_cache(hubs.hf_cache, "owner/model", model_files)
    resolved = resolve_model("owner/model")
    assert resolved.path == snapshot and resolved.reason.startswith("Hugging Face cache")
    assert hubs.downloads == []


def test_a_model_in_the_modelscope_cache_is_found_for_a_bare_id(hubs, model_files):
    folder = write_modelscope_cache(hubs.modelscope_cache, "owner/model", model_files)
    resolved = resolve_model("owner/model")  # the default hub is Hugging Face; its cache is empty
    assert resolved.path == folder and resolved.reason.startswith("ModelScope cache")
    assert hubs.downloads == []


def test_the_chosen_hubs_cache_is_read_first(hubs, model_files):
    hf = write_hf_cache(hubs.hf_cache, "owner/model", model_files)
    ms = write_modelscope_cache(hubs.modelscope_cache, "owner/model", model_files)
    assert resolve_model("owner/model").path == hf
    assert resolve_model("owner/model", hub="modelscope").path == ms
    assert resolve_model("modelscope:owner/model").path == ms
    assert resolve_model("huggingface:owner/model", hub="modelscope").path == hf


def test_modelscope_downloads_through_its_package_into_its_cache(hubs, model_files):
    hubs.publish("modelscope", "Qwen/Qwen3-Embedding-0.6B", model_files)
    resolved = resolve_model("modelscope:Qwen/Qwen3-Embedding-0.6B")
    assert resolved.reason.startswith("downloaded from ModelScope")
    (hub, repo_id, kwargs), = hubs.downloads
    assert (hub, repo_id) == ("modelscope", "Qwen/Qwen3-Embedding-0.6B")
    assert kwargs["revision"] is None and "*.safetensors" in kwargs["allow_patterns"]
    assert "*.gguf" not in " ".join(kwargs["allow_patterns"])  # only what q3embed reads


def test_a_bare_id_downloads_from_the_hub_the_user_chose(hubs, model_files):
    hubs.publish("modelscope", "owner/model", model_files)
    resolve_model("owner/model", hub="modelscope")
    assert [d[0] for d in hubs.downloads] == ["modelscope"]


def test_a_modelscope_gguf_name_fetches_the_one_file_of_that_quantization(hubs, tmp_path):
    repo = tmp_path / "gguf-repo"
    repo.mkdir()
    for name in ("Qwen3-Embedding-0.6B-Q8_0.gguf", "Qwen3-Embedding-0.6B-f16.gguf"):
        (repo / name).write_bytes(b"GGUF")
    hubs.publish("modelscope", GGUF_REPO, repo)
    resolved = resolve_model(f"modelscope:{GGUF_REPO}:Q8_0")
    assert resolved.path.name == "Qwen3-Embedding-0.6B-Q8_0.gguf"
    assert "*Q8_0.gguf" in hubs.downloads[0][2]["allow_patterns"]


def test_nothing_found_says_every_place_it_looked_and_the_command_that_fetches_it(hubs, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hf-mirror.example")
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("owner/missing")
    message = str(caught.value)
    assert "\n" not in message
    assert f"the Hugging Face cache {hubs.hf_cache}" in message and "the ModelScope cache" in message
    assert "downloading from https://hf-mirror.example (HF_ENDPOINT sets a mirror) failed (ConnectionError" in message
    assert "hf download owner/missing --local-dir ./missing" in message and "--model ./missing" in message
    with pytest.raises(ModelNotFoundError, match="modelscope download owner/missing --local-dir ./missing"):
        resolve_model("owner/missing", hub="modelscope")
    with pytest.raises(ModelNotFoundError, match=f"the Ollama store {hubs.ollama_models}"):
        resolve_model("owner/missing-GGUF:Q8_0")  # Ollama's spelling too: its store was searched


def test_without_the_modelscope_package_it_says_how_to_install_it(hubs, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # an import of it now fails
    with pytest.raises(ModelNotFoundError, match=r"pip install 'q3embed\[modelscope\]'"):
        resolve_model("modelscope:owner/model")
    with pytest.raises(ModelNotFoundError, match=r"not the ModelScope cache \(pip install"):
        resolve_model("owner/model")


def test_an_unknown_hub_is_refused_by_name(hubs):
    from q3embed import ModelOptions
    from q3embed.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="hub must be one of huggingface, modelscope"):
        ModelOptions(hub="gitee")


def test_auto_picks_qwen3_from_the_modelscope_cache(hubs, tiny_embedding_dir):
    write_modelscope_cache(hubs.modelscope_cache, QWEN3_EMBEDDING_DEFAULT, tiny_embedding_dir)
    embedder = Embedder("auto", dtype="float32", device="cpu")
    assert embedder.info.name == QWEN3_EMBEDDING_DEFAULT and embedder.info.kind == "qwen3"
    assert embedder.info.source.startswith("ModelScope cache") and hubs.downloads == []


def test_auto_picks_qwen3_from_the_ollama_library_before_any_download(hubs, tiny_embedding_dir, tmp_path):
    gguf_file = write_gguf(tiny_embedding_dir, tmp_path / "qwen3-embedding.gguf", file_type="F16")
    _pull(hubs.ollama_models, gguf_file, "registry.ollama.ai", "library", "qwen3-embedding", "0.6b")
    embedder = Embedder("auto", dtype="float32", device="cpu")
    assert embedder.info.name == QWEN3_EMBEDDING_DEFAULT and embedder.info.source.startswith("Ollama store")
    assert "qwen3-embedding:0.6b" in embedder.info.aliases and hubs.downloads == []


def test_info_says_where_it_found_the_model_or_where_it_looked(hubs, tiny_embedding_dir, capsys):
    import json

    write_hf_cache(hubs.hf_cache, "owner/tiny", tiny_embedding_dir)
    assert main(["info", "--model", "owner/tiny", "--dtype", "float32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["source"].startswith("Hugging Face cache")
    assert main(["info", "--model", "owner/absent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("q3embed: error: model 'owner/absent' is not in any local cache") and "hf download" in err
