"""Packing and batching never change a result: alone, in a batch, or split across batches."""

from __future__ import annotations

import numpy as np
import pytest

from q3embed import Embedder, Reranker
from q3embed.engine.batch import pack, shared_prefix_length
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES


def test_each_item_alone_equals_its_vector_in_a_mixed_batch(embedder):
    together = embedder.encode(MIXED_TEXTS)
    for index, text in enumerate(MIXED_TEXTS):
        alone = embedder.encode([text])[0]
        # Components are ~0.1; matmul blocking may differ with the batch's token count, which
        # moves the last bits (seen: 1e-7), never more than 1e-5.
        np.testing.assert_allclose(alone, together[index], atol=1e-5)
        assert float(alone @ together[index]) >= 0.999999


def test_token_budget_batches_give_the_same_vectors(tiny_embedding_dir, embedder):
    small_batches = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_batch_tokens=40)
    np.testing.assert_allclose(small_batches.encode(MIXED_TEXTS), embedder.encode(MIXED_TEXTS), atol=1e-5)


def test_reranker_scores_do_not_depend_on_batching(tiny_reranker_dir):
    big = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu")
    small = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_batch_tokens=64)
    together = big.score(QUERIES[0], DOCUMENTS)
    np.testing.assert_allclose(small.score(QUERIES[0], DOCUMENTS), together, atol=1e-6)
    for index, doc in enumerate(DOCUMENTS):
        assert big.score(QUERIES[0], [doc])[0] == pytest.approx(together[index], abs=1e-6)


def test_pack_restarts_positions_for_each_sequence():
    ids, positions, seq_lens = pack([[7, 8, 9], [4], [5, 6]], device="cpu")
    assert ids.tolist() == [7, 8, 9, 4, 5, 6]
    assert positions.tolist() == [0, 1, 2, 0, 0, 1]
    assert seq_lens == [3, 1, 2]


def test_shared_prefix_reranking_equals_plain_reranking(tiny_reranker_dir):
    shared = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_batch_tokens=128)
    plain = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", reuse_prefix=False)
    for query in QUERIES:
        for instruction in (None, "Find the passage that answers the question"):
            np.testing.assert_allclose(
                shared.score(query, DOCUMENTS, instruction=instruction),
                plain.score(query, DOCUMENTS, instruction=instruction), atol=1e-5)
    # Identical documents share everything but their last token.
    np.testing.assert_allclose(shared.score("q", ["same doc"] * 3), plain.score("q", ["same doc"] * 3), atol=1e-5)


def test_shared_prefix_length_leaves_each_sequence_a_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1], [1]]) == 0
    assert shared_prefix_length([[9, 2], [1, 2]]) == 0
