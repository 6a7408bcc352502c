"""Retrieval metrics computed exactly as BEIR reports them.

BEIR's `EvaluateRetrieval.evaluate` hands the run to pytrec_eval (trec_eval) with the measures
`ndcg_cut.k`, `map_cut.k` and `recall.k`, and computes MRR@k in its own code. The definitions
below follow trec_eval's source (form_res_rels.c, m_ndcg_cut.c, m_map_cut.c, m_recall.c):

- A run is ranked by score descending; equal scores are ordered by document id descending
  (trec_eval's `comp_sim_docno`, a byte-wise strcmp, which for str is code-point order).
- A judged document has its qrels grade (>= 0); a document absent from the qrels is not
  relevant; a negative grade means "in the pool but unjudged" and counts nowhere.
- Relevant means grade >= 1 (trec_eval's default relevance level).
- nDCG@k: gain = grade, discount log2(rank + 1) with ranks from 1; the ideal ordering is all
  judged grades sorted descending. No relevant document: 0.
- MAP@k: sum of precision at each relevant document within the top k, divided by the number of
  relevant documents of the query (not by min(k, relevant)). No relevant document: 0.
- Recall@k: relevant documents in the top k / relevant documents. No relevant document: 0.
- MRR@k (BEIR's `custom_metrics.mrr`): 1/rank of the first document with grade > 0 within the
  top k, 0 if none; summed over the queries that have a run and divided by the number of
  queries in the qrels. BEIR orders ties by dict insertion order, which depends on its search
  internals; here ties are ordered as trec_eval orders them, so every metric sees one ranking.

pytrec_eval evaluates the queries that are both in the run and in the qrels (an empty ranking
still counts, with zeros); BEIR averages over those. `evaluate_run` does the same, and leaves a
query's own id out of its ranking when asked to (BEIR's `ignore_identical_ids`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Qrels",
    "Run",
    "DEFAULT_MEASURES",
    "rank",
    "ndcg_at",
    "map_at",
    "recall_at",
    "reciprocal_rank_at",
    "QueryScores",
    "evaluate_run",
]

Qrels = Mapping[str, Mapping[str, int]]  # query id -> document id -> grade
Run = Mapping[str, Mapping[str, float]]  # query id -> document id -> score

# (measure, k): what `q3embed eval` reports, in BEIR's names.
DEFAULT_MEASURES: tuple[tuple[str, int], ...] = (("NDCG", 10), ("Recall", 100), ("MRR", 10), ("MAP", 10))
RELEVANCE_LEVEL = 1


def rank(scores: Mapping[str, float]) -> list[str]:
    """Document ids best first, ties broken by document id descending (trec_eval's order)."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _relevant_count(judged: Mapping[str, int]) -> int:
    return sum(1 for grade in judged.values() if grade >= RELEVANCE_LEVEL)


def ndcg_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(judged.get(doc, 0) / math.log2(i + 2)
              for i, doc in enumerate(ranking[:k]) if judged.get(doc, 0) > 0)
    ideal_grades = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(i + 2) for i, grade in enumerate(ideal_grades))
    return dcg / ideal if ideal > 0 else 0.0


def map_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = _relevant_count(judged)
    if relevant == 0:
        return 0.0
    found, total = 0, 0.0
    for i, doc in enumerate(ranking[:k]):
        if judged.get(doc, 0) >= RELEVANCE_LEVEL:
            found += 1
            total += found / (i + 1)
    return total / relevant


def recall_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = _relevant_count(judged)
    if relevant == 0:
        return 0.0
    return sum(1 for doc in ranking[:k] if judged.get(doc, 0) >= RELEVANCE_LEVEL) / relevant


def reciprocal_rank_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranking[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_MEASURES = {"NDCG": ndcg_at, "MAP": map_at, "Recall": recall_at, "MRR": reciprocal_rank_at}


@dataclass(frozen=True)
class QueryScores:
    """Mean scores over the evaluated queries, plus each query's own (for significance tests)."""

    means: dict[str, float]  # "NDCG@10" -> mean
    per_query: dict[str, dict[str, float]]  # query id -> "NDCG@10" -> value
    queries: int  # queries evaluated (in both the run and the qrels)


def _without_self(run: Run, query_id: str) -> dict[str, float]:
    return {doc: score for doc, score in run[query_id].items() if doc != query_id}


def evaluate_run(qrels: Qrels, run: Run, measures: Iterable[tuple[str, int]] = DEFAULT_MEASURES,
                 *, ignore_identical_ids: bool = False) -> QueryScores:
    """BEIR's numbers for `run` against `qrels`; names like "NDCG@10", "Recall@100", "MRR@10"."""
    wanted = [(name, k) for name, k in measures]
    unknown = sorted({name for name, _ in wanted} - set(_MEASURES))
    if unknown:
        raise ValueError(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(_MEASURES)}")
    per_query: dict[str, dict[str, float]] = {}
    for query_id in run:
        if query_id not in qrels:
            continue  # pytrec_eval skips queries without judgements
        scores = _without_self(run, query_id) if ignore_identical_ids else dict(run[query_id])
        ranking = rank(scores)
        judged = {doc: grade for doc, grade in qrels[query_id].items() if grade >= 0}
        per_query[query_id] = {f"{name}@{k}": _MEASURES[name](ranking, judged, k) for name, k in wanted}
    means = {}
    for name, k in wanted:
        key = f"{name}@{k}"
        total = sum(values[key] for values in per_query.values())
        # BEIR divides MRR by every query of the qrels, the pytrec_eval measures by those evaluated.
        count = len(qrels) if name == "MRR" else len(per_query)
        means[key] = total / count if count else 0.0
    return QueryScores(means=means, per_query=per_query, queries=len(per_query))
