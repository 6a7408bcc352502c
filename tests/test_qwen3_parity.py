"""Our packed Qwen3 engine equals the transformers reference, computed as the model cards do."""

from __future__ import annotations

import numpy as np

from q3embed import Embedder, Reranker
from q3embed.testing.checkpoints import ENDOFTEXT_ID
from q3embed.text.prompts import query_text
from reference import reference_embeddings, reference_rerank
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES


def test_mixed_batch_spans_1_to_300_tokens(embedder):
    lengths = sorted(len(ids) for ids in embedder.tokenize(MIXED_TEXTS))
    assert lengths[0] <= 2 and 280 <= lengths[-1] <= 320


def test_embedding_parity_documents_and_queries(embedder, tiny_embedding_dir):
    instructed = [query_text(q, "Given a question, retrieve passages that answer it") for q in QUERIES]
    default_queries = [query_text(q) for q in QUERIES]
    ours = np.concatenate([
        embedder.encode(MIXED_TEXTS),
        embedder.encode(QUERIES, query=True, instruction="Given a question, retrieve passages that answer it"),
        embedder.encode_queries(QUERIES),
    ])
    reference = reference_embeddings(tiny_embedding_dir, MIXED_TEXTS + instructed + default_queries)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_embedding_parity_after_truncation(tiny_embedding_dir):
    short = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=32)
    ours = short.encode(MIXED_TEXTS)
    reference = reference_embeddings(tiny_embedding_dir, MIXED_TEXTS, max_length=32)
    assert (ours * reference).sum(axis=1).min() >= 0.99999
    assert all(len(ids) <= 32 and ids[-1] == ENDOFTEXT_ID for ids in short.tokenize(MIXED_TEXTS))


def test_reranker_parity(reranker, tiny_reranker_dir):
    for query in QUERIES:
        ours = reranker.score(query, DOCUMENTS)
        reference = reference_rerank(tiny_reranker_dir, query, DOCUMENTS)
        assert np.abs(np.array(ours) - np.array(reference)).max() <= 1e-4


def test_reranker_parity_with_instruction_and_truncation(tiny_reranker_dir):
    # 80 tokens: prefix (39) + suffix (9) leave 32 for the body, so long documents get cut.
    short = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_length=80)
    instruction = "Judge whether the passage answers the question"
    ours = short.score(QUERIES[1], DOCUMENTS, instruction=instruction)
    reference = reference_rerank(tiny_reranker_dir, QUERIES[1], DOCUMENTS, instruction, max_length=80)
    assert np.abs(np.array(ours) - np.array(reference)).max() <= 1e-4


def test_rerank_sorts_and_cuts(reranker):
    scores = reranker.score(QUERIES[0], DOCUMENTS)
    ranked = reranker.rerank(QUERIES[0], DOCUMENTS, top_n=3)
    assert [r.index for r in ranked] == sorted(range(len(scores)), key=lambda i: -scores[i])[:3]
    assert [r.score for r in ranked] == sorted(scores, reverse=True)[:3]
    assert all(0.0 < s < 1.0 for s in scores)


def test_reading_only_the_last_rows_equals_the_full_pass(embedder):
    """Qwen3Model(rows=last tokens) computes the last layer at those rows only; the hidden states
    there equal the full pass's, for a packed batch of different lengths."""
    import torch

    from q3embed.engine.batch import pack
    from q3embed.model.heads import last_token_indices

    model = embedder._backend.model  # noqa: SLF001
    sequences = embedder.tokenize(["a short one", "a much longer text " * 6, "x"])
    input_ids, positions, seq_lens = pack(sequences, torch.device("cpu"))
    rows = last_token_indices(seq_lens)
    with torch.inference_mode():
        full = model(input_ids, positions, seq_lens)[rows]
        picked = model(input_ids, positions, seq_lens, rows=rows)
    torch.testing.assert_close(picked, full, atol=1e-5, rtol=1e-5)
