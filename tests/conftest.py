"""Shared fixtures: tiny random Qwen3 checkpoints, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
