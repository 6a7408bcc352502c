"""`q3embed eval`: embed a BEIR-format dataset, retrieve, optionally rerank, and score the run."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Embedder, Reranker
from ..errors import InputError
from ..text.prompts import DEFAULT_TASK
from .beir import BeirDataset, load_beir
from .cache import DEFAULT_CACHE_DIR, EmbeddingCache, cache_key
from .encoding import encode_texts
from .metrics import DEFAULT_MEASURES, evaluate_run, rank
from .retrieval import exact_search

__all__ = ["EvalConfig", "EvalReport", "evaluate_beir", "format_table"]


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    instruction: str | None = None  # None: the dataset's default for Qwen3 models, else the model's own prompt
    dimensions: int | None = None  # Matryoshka size; None: the model's full size
    top_k: int = 100  # documents retrieved per query; metrics see these (Recall@100 needs 100)
    rerank_candidates: int = 100  # documents per query the reranker reorders (BEIR reranks the top 100)
    ignore_identical_ids: bool | None = None  # None: the dataset's default (see beir.DatasetDefaults)
    cache_dir: Path | None = DEFAULT_CACHE_DIR  # None: no cache
    measures: tuple[tuple[str, int], ...] = DEFAULT_MEASURES
    progress: bool = False  # progress bars on stderr (only when it is a terminal)


@dataclass
class EvalReport:
    dataset: str
    path: str
    split: str
    documents: int
    queries: int
    model: dict[str, Any]
    dimensions: int
    instruction: str | None  # the query instruction used; None: the model's own query prompt
    ignore_identical_ids: bool
    top_k: int
    metrics: dict[str, dict[str, float]]  # "dense" (and "rerank") -> {"NDCG@10": ...}
    timings: dict[str, float]  # seconds per stage and "total"
    cache: dict[str, Any] = field(default_factory=dict)  # {"hit": bool, "path": str | None}
    reranker: dict[str, Any] | None = None
    rerank_candidates: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Stopwatch:
    def __init__(self, earlier: Mapping[str, float] | None = None) -> None:
        self.timings: dict[str, float] = dict(earlier or {})
        self._earlier = sum(self.timings.values())
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - start

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": self._earlier + time.perf_counter() - self._start}


def _bar(enabled: bool, total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI, pipes).
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True,
                dynamic_ncols=True, smoothing=0.1)


def _query_instruction(embedder: Embedder, dataset: BeirDataset, config: EvalConfig) -> str | None:
    if config.instruction is not None:
        return config.instruction
    if embedder.info.kind == "qwen3":
        return dataset.defaults.instruction or DEFAULT_TASK
    return None  # BERT-family models take their own fixed query prompt, if any


def _corpus_vectors(embedder: Embedder, dataset: BeirDataset, config: EvalConfig,
                    dimensions: int) -> tuple[np.ndarray, dict[str, Any]]:
    cache = EmbeddingCache(config.cache_dir) if config.cache_dir is not None else None
    key = cache_key(embedder.info, dimensions, dataset.corpus_file) if cache else ""
    if cache:
        cached = cache.load(key, dataset.corpus_ids, dimensions)
        if cached is not None:
            return cached, {"hit": True, "path": str(cache.paths(key)[0])}
    with _bar(config.progress, len(dataset.corpus_texts), f"{dataset.name} corpus", "doc") as bar:
        vectors = encode_texts(embedder, dataset.corpus_texts, dimensions=config.dimensions, progress=bar.update)
    path = cache.store(key, dataset.corpus_ids, vectors, embedder.info, str(dataset.path)) if cache else None
    return vectors, {"hit": False, "path": str(path) if path else None}


def _rerank(reranker: Reranker, dataset: BeirDataset, run: dict[str, dict[str, float]], candidates: int,
            instruction: str | None, progress: bool) -> dict[str, dict[str, float]]:
    """BEIR's Rerank: the reranked run holds the top `candidates` of each query, with reranker scores."""
    texts = dict(zip(dataset.corpus_ids, dataset.corpus_texts, strict=True))
    reranked: dict[str, dict[str, float]] = {}
    with _bar(progress, len(dataset.query_ids), f"{dataset.name} rerank", "query") as bar:
        for query_id, query in zip(dataset.query_ids, dataset.query_texts, strict=True):
            top = rank(run[query_id])[:candidates]
            scored = [doc for doc in top if texts[doc].strip()]
            # An empty document cannot be put to the reranker; it goes last.
            scores = dict.fromkeys(top, float("-inf"))
            if scored:
                values = reranker.score(query, [texts[doc] for doc in scored], instruction=instruction)
                scores.update(zip(scored, values, strict=True))
            reranked[query_id] = scores
            bar.update(1)
    return reranked


def _reranker_instruction(reranker: Reranker, dataset: BeirDataset, config: EvalConfig) -> str | None:
    if config.instruction is not None:
        return config.instruction
    return dataset.defaults.instruction if reranker.info.kind == "qwen3-reranker" else None


def evaluate_beir(embedder: Embedder, data: str | Path | BeirDataset, config: EvalConfig = EvalConfig(),
                  reranker: Reranker | None = None, *, timings: Mapping[str, float] | None = None) -> EvalReport:
    """Score `embedder` (and `reranker` on its top candidates) on a BEIR-format dataset.

    `timings`: stages the caller measured before (reading the data, loading the models), so that
    the report's total is the whole run's time.
    """
    if config.top_k < 1 or config.rerank_candidates < 1:
        raise InputError("top_k and rerank_candidates must be positive")
    clock = _Stopwatch(timings)
    if isinstance(data, BeirDataset):
        dataset = data
    else:
        with clock.stage("load"):
            dataset = load_beir(data, config.split)
    dimensions = config.dimensions or embedder.dimensions
    instruction = _query_instruction(embedder, dataset, config)
    candidates = min(config.rerank_candidates, config.top_k)  # the reranker sees what retrieval returned
    ignore_ids = (dataset.defaults.ignore_identical_ids if config.ignore_identical_ids is None
                  else config.ignore_identical_ids)
    with clock.stage("corpus"):
        doc_vectors, cache_state = _corpus_vectors(embedder, dataset, config, dimensions)
    with clock.stage("queries"), _bar(config.progress, len(dataset.query_texts), f"{dataset.name} queries",
                                      "query") as bar:
        query_vectors = encode_texts(embedder, dataset.query_texts, query=True, instruction=instruction,
                                     dimensions=config.dimensions, progress=bar.update)
    with clock.stage("search"):
        run = exact_search(query_vectors, doc_vectors, dataset.query_ids, dataset.corpus_ids, config.top_k,
                           ignore_identical_ids=ignore_ids)
    metrics = {"dense": evaluate_run(dataset.qrels, run, config.measures, ignore_identical_ids=ignore_ids).means}
    if reranker is not None:
        with clock.stage("rerank"):
            reranked = _rerank(reranker, dataset, run, candidates,
                               _reranker_instruction(reranker, dataset, config), config.progress)
        metrics["rerank"] = evaluate_run(dataset.qrels, reranked, config.measures,
                                         ignore_identical_ids=ignore_ids).means
    return EvalReport(
        dataset=dataset.name, path=str(dataset.path), split=dataset.split, documents=len(dataset.corpus_ids),
        queries=len(dataset.query_ids), model=asdict(embedder.info), dimensions=dimensions,
        instruction=instruction, ignore_identical_ids=ignore_ids, top_k=config.top_k, metrics=metrics,
        timings=clock.total(), cache=cache_state,
        reranker=asdict(reranker.info) if reranker is not None else None,
        rerank_candidates=candidates if reranker is not None else None,
    )


def format_table(report: EvalReport) -> str:
    """A plain-text table of the metrics (5 decimals, as BEIR rounds them) and the run's times."""
    names = list(next(iter(report.metrics.values())))
    width = max(len(n) for n in names) + 2
    lines = [
        f"dataset  {report.dataset} ({report.split}): {report.queries:,} queries, {report.documents:,} documents",
        (f"model    {report.model['name']} ({report.model['kind']}, {report.dimensions} dims, "
         f"{report.model['dtype']}, {report.model['device']})"),
    ]
    if report.reranker is not None:
        lines.append(f"reranker {report.reranker['name']} (top {report.rerank_candidates} per query)")
    lines += ["", "stage   " + "".join(n.rjust(width) for n in names)]
    for stage, values in report.metrics.items():
        lines.append(stage.ljust(8) + "".join(f"{values[n]:.5f}".rjust(width) for n in names))
    t = report.timings
    parts = [f"{name} {value:.1f} s" for name, value in t.items() if name != "total"]
    cached = " (corpus vectors from cache)" if report.cache.get("hit") else ""
    lines += ["", f"time     {t['total']:.1f} s: " + ", ".join(parts) + cached]
    return "\n".join(lines) + "\n"
