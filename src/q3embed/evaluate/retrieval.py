"""Exact dense retrieval: every query against every document, top k by cosine.

The k best are chosen with trec_eval's order (score descending, then document id descending),
including at the cut: when several documents tie with the k-th score, the same ones are kept
that trec_eval would rank first from a longer list, so a top-100 run scores exactly as BEIR's
top-1000 run does at every cutoff up to 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .metrics import rank

__all__ = ["exact_search", "SCORES_PER_STEP"]

# Queries per matmul: [chunk, N] float32 scores stay under ~64 MB whatever the corpus size.
SCORES_PER_STEP = 1 << 24


def _row_top(scores: torch.Tensor, doc_ids: Sequence[str], k: int) -> dict[str, float]:
    """The k best of one row [N] (-inf marks excluded documents), ties at the cut by id."""
    valid = int(torch.isfinite(scores).sum())
    if valid == 0:
        return {}
    kth = torch.topk(scores, min(k, valid)).values[-1]
    candidates = torch.nonzero(scores >= kth).flatten().tolist()  # k, or more when the k-th score ties
    picked = {doc_ids[i]: float(scores[i]) for i in candidates}
    return {doc: picked[doc] for doc in rank(picked)[:k]}


@torch.inference_mode()
def exact_search(query_vectors: np.ndarray, doc_vectors: np.ndarray, query_ids: Sequence[str],
                 doc_ids: Sequence[str], k: int, *, ignore_identical_ids: bool = False) -> dict[str, dict[str, float]]:
    """query id -> {document id: cosine} for the k best documents (vectors are unit length).

    With ignore_identical_ids a query never retrieves the document that has its own id (BEIR
    drops it in search and evaluation), so it still gets k other documents.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    docs = torch.from_numpy(np.ascontiguousarray(doc_vectors, dtype=np.float32))  # [N, d]
    queries = torch.from_numpy(np.ascontiguousarray(query_vectors, dtype=np.float32))  # [Q, d]
    position = {doc: i for i, doc in enumerate(doc_ids)} if ignore_identical_ids else {}
    step = max(1, SCORES_PER_STEP // max(1, len(doc_ids)))
    results: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), step):
        scores = queries[start:start + step] @ docs.T  # [chunk, N]
        scores = torch.nan_to_num(scores, nan=-1.0)  # as BEIR does for NaN similarities
        for row, query_id in enumerate(query_ids[start:start + step]):
            own = position.get(query_id)
            if own is not None:
                scores[row, own] = float("-inf")
            results[query_id] = _row_top(scores[row], doc_ids, k)
    return results
