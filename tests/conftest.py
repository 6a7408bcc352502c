"""Shared fixtures: tiny random Qwen3 checkpoints, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from q3embed import Embedder, Reranker
from q3embed.testing.checkpoints import CheckpointSpec, build_checkpoint


@pytest.fixture(scope="session")
def tiny_embedding_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Qwen3-Embedding checkpoint (hidden size 64) in the official file layout."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny-embedding"), CheckpointSpec())


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Qwen3-Reranker checkpoint: `model.`-prefixed keys and lm_head, no EOS post-processor."""
    spec = CheckpointSpec(kind="reranker", prefixed_keys=True, eos_post_processor=False)
    return build_checkpoint(tmp_path_factory.mktemp("tiny-reranker"), spec)


@pytest.fixture(scope="session")
def embedder(tiny_embedding_dir) -> Embedder:
    """The tiny embedding model in fp32 on CPU, where parity is exact to 1e-5."""
    return Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def reranker(tiny_reranker_dir) -> Reranker:
    return Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session", autouse=True)
def private_data_home(tmp_path_factory: pytest.TempPathFactory):
    """Collections created without an explicit directory land in a temporary XDG_DATA_HOME."""
    import os

    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved


@pytest.fixture()
def hubs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Offline model hubs with empty caches in tmp_path (see tests/hubs.py): no test reaches the network."""
    from hubs import install_fake_hubs

    return install_fake_hubs(monkeypatch, tmp_path / "hubs")
