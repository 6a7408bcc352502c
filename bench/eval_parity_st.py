"""q3embed eval vs sentence-transformers + pytrec_eval on a BEIR dataset, in one process.

The reference side is written the way BEIR runs a dense model, without q3embed: BEIR's loader
(corpus/queries JSON lines, qrels TSV with a header), documents as (title + " " + text).strip(),
SentenceTransformer.encode, cosine similarity, torch.topk of the best --reference-top-k (1000, as
BEIR) without the query's own id, then pytrec_eval's ndcg_cut / recall / map_cut and BEIR's MRR.
The q3embed side is `evaluate_beir`, what `q3embed eval` runs, without its cache.

    .venv/bin/python bench/eval_parity_st.py --data /work/shared/data/nfcorpus

Exit code 1 when the nDCG@10 of the two differs by more than --tolerance (0.002).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import pytrec_eval
import torch
from sentence_transformers import SentenceTransformer, util

from q3embed import Embedder
from q3embed.evaluate import EvalConfig, evaluate_beir, load_beir
from q3embed.weights.resolve import bundled_minilm_dir

K_VALUES = (10, 100)


def beir_load(folder: Path, split: str) -> tuple[dict, dict, dict]:
    """BEIR's GenericDataLoader, reduced to what it does for a local folder."""
    corpus = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            corpus[row.get("_id")] = {"text": row.get("text"), "title": row.get("title")}
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            queries[row.get("_id")] = row.get("text")
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        next(reader)
        for row in reader:
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return corpus, {qid: queries[qid] for qid in qrels}, qrels


def beir_mrr(qrels: dict, results: dict, k: int) -> float:
    total = 0.0
    for qid, scores in results.items():
        relevant = {doc for doc, grade in qrels[qid].items() if grade > 0}
        for rank, (doc, _) in enumerate(sorted(scores.items(), key=lambda item: item[1], reverse=True)[:k]):
            if doc in relevant:
                total += 1.0 / (rank + 1)
                break
    return total / len(qrels)


def reference(folder: Path, split: str, model_dir: Path, top_k: int) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    corpus, queries, qrels = beir_load(folder, split)
    model = SentenceTransformer(str(model_dir), device="cpu")
    doc_ids = list(corpus)
    texts = [(corpus[d]["title"] + " " + corpus[d]["text"]).strip() for d in doc_ids]
    query_ids = list(queries)
    doc_vectors = model.encode(texts, batch_size=32, convert_to_tensor=True, show_progress_bar=False)
    query_vectors = model.encode([queries[q] for q in query_ids], batch_size=32, convert_to_tensor=True,
                                 show_progress_bar=False)
    scores = util.cos_sim(query_vectors, doc_vectors)
    values, indices = torch.topk(scores, min(top_k + 1, len(doc_ids)), dim=1)
    results: dict[str, dict[str, float]] = {}
    for row, qid in enumerate(query_ids):
        hits = [(doc_ids[i], v) for i, v in zip(indices[row].tolist(), values[row].tolist()) if doc_ids[i] != qid]
        results[qid] = dict(hits[:top_k])
    measures = {f"ndcg_cut.{','.join(map(str, K_VALUES))}", f"recall.{','.join(map(str, K_VALUES))}",
                f"map_cut.{','.join(map(str, K_VALUES))}"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(results)
    n = len(per_query)
    metrics = {
        "NDCG@10": sum(s["ndcg_cut_10"] for s in per_query.values()) / n,
        "Recall@100": sum(s["recall_100"] for s in per_query.values()) / n,
        "MRR@10": beir_mrr(qrels, results, 10),
        "MAP@10": sum(s["map_cut_10"] for s in per_query.values()) / n,
    }
    return metrics, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/nfcorpus"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", type=Path, default=bundled_minilm_dir())
    parser.add_argument("--dtype", default="float32", help="q3embed's dtype (the reference is float32)")
    parser.add_argument("--reference-top-k", type=int, default=1000)
    parser.add_argument("--tolerance", type=float, default=0.002)
    args = parser.parse_args()
    torch.manual_seed(0)

    ours_start = time.perf_counter()
    embedder = Embedder(str(args.model), device="cpu", dtype=args.dtype)
    dataset = load_beir(args.data, args.split)
    report = evaluate_beir(embedder, dataset, EvalConfig(split=args.split, cache_dir=None))
    ours_seconds = time.perf_counter() - ours_start
    theirs, theirs_seconds = reference(args.data, args.split, args.model, args.reference_top_k)

    ours = report.metrics["dense"]
    print(f"dataset {report.dataset} ({args.split}): {report.queries} queries, {report.documents} documents")
    print(f"model   {args.model} (q3embed {report.model['dtype']} on {report.model['device']}; "
          "sentence-transformers float32 on cpu)\n")
    print(f"{'metric':<12}{'q3embed':>10}{'ST+pytrec':>12}{'diff':>11}")
    for name in ours:
        print(f"{name:<12}{ours[name]:>10.5f}{theirs[name]:>12.5f}{ours[name] - theirs[name]:>+11.5f}")
    print(f"\ntime    q3embed eval {ours_seconds:.1f} s (model load included; {report.timings['corpus']:.1f} s corpus), "
          f"sentence-transformers + pytrec_eval {theirs_seconds:.1f} s")
    difference = abs(ours["NDCG@10"] - theirs["NDCG@10"])
    verdict = "PASS" if difference <= args.tolerance else "FAIL"
    print(f"nDCG@10 difference {difference:.5f} (tolerance {args.tolerance}): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
