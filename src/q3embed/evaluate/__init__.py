"""Measuring q3embed: retrieval quality on BEIR-format data, an MTEB encoder, and parity checks.

    from q3embed import Embedder
    from q3embed.evaluate import EvalConfig, evaluate_beir

    report = evaluate_beir(Embedder("Qwen/Qwen3-Embedding-0.6B"), "datasets/nfcorpus", EvalConfig())
    print(report.metrics["dense"]["NDCG@10"])

- `beir`: the dataset loader (BEIR's joining of title and text, per-dataset defaults)
- `metrics`: nDCG@k, MAP@k, Recall@k as pytrec_eval computes them, MRR@k as BEIR does
- `search`: exact cosine top-k with trec_eval's tie order; `cache`: corpus vectors on disk
- `run`: the whole evaluation (`evaluate_beir`) and its report
- `mteb`: `MTEBEncoder`, a q3embed model for the `mteb` package (imported on demand)
- `parity`: our engine against the transformers reference (`check_parity`)

Its names are imported on first use (lazy_loader), so importing one module of this package
does not import the others (and torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from .beir import BeirDataset, DatasetDefaults, dataset_defaults, document_text, load_beir
    from .evaluation import EvalConfig, EvalReport, evaluate_beir, format_table
    from .metrics import DEFAULT_MEASURES, QueryScores, evaluate_run, rank
    from .retrieval import exact_search

__all__ = [
    "BeirDataset",
    "DatasetDefaults",
    "dataset_defaults",
    "document_text",
    "load_beir",
    "DEFAULT_MEASURES",
    "QueryScores",
    "evaluate_run",
    "rank",
    "EvalConfig",
    "EvalReport",
    "evaluate_beir",
    "format_table",
    "exact_search",
]

_LAZY = {
    "beir": ["BeirDataset", "DatasetDefaults", "dataset_defaults", "document_text", "load_beir"],
    "evaluation": ["EvalConfig", "EvalReport", "evaluate_beir", "format_table"],
    "metrics": ["DEFAULT_MEASURES", "QueryScores", "evaluate_run", "rank"],
    "retrieval": ["exact_search"],
}
__getattr__, _, _ = lazy_loader.attach(__name__, submod_attrs=_LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)

