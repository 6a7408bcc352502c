"""Retrieval metrics: hand-computed cases, and equality with pytrec_eval (BEIR's evaluator)."""

from __future__ import annotations

import math
import random

import pytest

from q3embed.evaluate.metrics import evaluate_run, map_at, ndcg_at, rank, recall_at, reciprocal_rank_at

MEASURES = (("NDCG", 10), ("Recall", 100), ("MRR", 10), ("MAP", 10))


def test_ties_are_ordered_by_document_id_descending():
    assert rank({"a": 0.5, "c": 0.9, "b": 0.5, "d": 0.1}) == ["c", "b", "a", "d"]
    # The tie order decides the metrics: d2 comes before d1, so the relevant d1 is at rank 2.
    scores = evaluate_run({"q": {"d1": 1}}, {"q": {"d1": 0.5, "d2": 0.5}}, MEASURES).means
    assert scores["NDCG@10"] == pytest.approx(1 / math.log2(3))
    assert scores["MRR@10"] == pytest.approx(0.5)
    assert scores["MAP@10"] == pytest.approx(0.5)


def test_graded_relevance_uses_the_grade_as_gain():
    judged = {"a": 1, "b": 2, "c": 0}
    # ranking c(0), b(2), a(1): DCG = 2/log2(3) + 1/log2(4); ideal = 2 + 1/log2(3)
    expected = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert ndcg_at(["c", "b", "a", "x"], judged, 10) == pytest.approx(expected)
    assert ndcg_at(["b", "a"], judged, 10) == pytest.approx(1.0)
    # the ideal ordering is cut at k too: one slot, the best grade
    assert ndcg_at(["a"], judged, 1) == pytest.approx(1 / 2)


def test_missing_and_zero_judgements_are_not_relevant():
    judged = {"rel": 1, "zero": 0}
    ranking = ["unjudged", "zero", "rel"]
    assert ndcg_at(ranking, judged, 10) == pytest.approx(1 / math.log2(4))
    assert reciprocal_rank_at(ranking, judged, 10) == pytest.approx(1 / 3)
    assert reciprocal_rank_at(ranking, judged, 2) == 0.0
    assert recall_at(ranking, judged, 2) == 0.0 and recall_at(ranking, judged, 3) == 1.0


def test_map_divides_by_all_relevant_documents_not_by_k():
    judged = {f"r{i}": 1 for i in range(20)}
    ranking = ["r0", "x", "r1"]  # precision 1/1 at rank 1 and 2/3 at rank 3, over 20 relevant
    assert map_at(ranking, judged, 10) == pytest.approx((1 + 2 / 3) / 20)
    assert map_at(ranking, judged, 2) == pytest.approx(1 / 20)


def test_query_without_relevant_documents_scores_zero_and_counts():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    run = {"q1": {"a": 1.0}, "q2": {"b": 1.0}}
    scores = evaluate_run(qrels, run, MEASURES)
    assert scores.queries == 2
    assert scores.per_query["q2"] == {"NDCG@10": 0.0, "Recall@100": 0.0, "MRR@10": 0.0, "MAP@10": 0.0}
    assert scores.means["NDCG@10"] == pytest.approx(0.5)


def test_which_queries_are_averaged():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "q3": {"a": 1.0}}  # q2 has no run, q3 no judgements
    scores = evaluate_run(qrels, run, MEASURES)
    assert scores.queries == 1  # pytrec_eval: queries both judged and run
    assert scores.means["NDCG@10"] == pytest.approx(1.0)
    assert scores.means["MRR@10"] == pytest.approx(0.5)  # BEIR: divided by every judged query
    # an empty ranking is still evaluated, with zeros
    assert evaluate_run(qrels, {"q1": {}, "q2": {"b": 1.0}}, MEASURES).means["NDCG@10"] == pytest.approx(0.5)


def test_ignore_identical_ids_drops_the_query_itself():
    qrels = {"q": {"a": 1}}
    run = {"q": {"q": 0.99, "a": 0.5}}
    assert evaluate_run(qrels, run, MEASURES).means["MRR@10"] == pytest.approx(0.5)
    assert evaluate_run(qrels, run, MEASURES, ignore_identical_ids=True).means["MRR@10"] == pytest.approx(1.0)


def test_negative_grades_count_nowhere():
    # trec_eval: a negative grade is "in the pool but unjudged": neither relevant nor in the ideal DCG.
    assert ndcg_at(["u", "a"], {"u": -1, "a": 1}, 10) == pytest.approx(1 / math.log2(3))


def test_unknown_measure_is_refused():
    with pytest.raises(ValueError, match="unknown measure"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}}, [("P", 10)])


# ---------------------------------------------------------------- against pytrec_eval


def _random_case(seed: int) -> tuple[dict, dict]:
    """Graded qrels with zeros, runs with many tied scores, unjudged documents, empty rankings."""
    rng = random.Random(seed)
    docs = [f"d{i:03d}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(40):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 30))
        qrels[qid] = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in judged}
        retrieved = rng.sample(docs, rng.randint(0, 120))
        run[qid] = {d: round(rng.random(), 1) for d in retrieved}  # one decimal: ties everywhere
    return qrels, run


@pytest.mark.parametrize("seed", range(5))
def test_equals_pytrec_eval(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier is not installed (test extra)")
    qrels, run = _random_case(seed)
    measures = {"ndcg_cut.3,10", "map_cut.10,100", "recall.5,100", "recip_rank"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = evaluate_run(qrels, run, [("NDCG", 3), ("NDCG", 10), ("MAP", 10), ("MAP", 100), ("Recall", 5),
                                     ("Recall", 100), ("MRR", 10)])
    assert set(ours.per_query) == set(theirs)
    for qid, values in theirs.items():
        mine = ours.per_query[qid]
        for name, key in [("NDCG@3", "ndcg_cut_3"), ("NDCG@10", "ndcg_cut_10"), ("MAP@10", "map_cut_10"),
                          ("MAP@100", "map_cut_100"), ("Recall@5", "recall_5"), ("Recall@100", "recall_100")]:
            assert mine[name] == pytest.approx(values[key], abs=1e-12), (qid, name)
    # MRR@10 is trec_eval's recip_rank of the run cut to its 10 best (in trec_eval's order).
    cut = {qid: {d: scores[d] for d in rank(scores)[:10]} for qid, scores in run.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    for qid, values in reciprocal.items():
        assert ours.per_query[qid]["MRR@10"] == pytest.approx(values["recip_rank"], abs=1e-12)
