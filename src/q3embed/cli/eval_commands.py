"""The measuring commands: eval (retrieval quality on BEIR-format data) and parity (vs transformers)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import engine  # its model classes load torch on first use, in the handlers
from ..errors import InputError
from ..evaluate.beir import load_beir
from ..evaluate.cache import DEFAULT_CACHE_DIR
from ..weights.resolve import resolve_model
from .common import DTYPES, PROG, add_model_flags, model_options, positive_int, subparser
from .io import read_rerank_requests, read_texts

if TYPE_CHECKING:  # evaluation and parity need torch: the handlers import them
    from ..evaluate.evaluation import EvalConfig, EvalReport
    from ..evaluate.parity import ParityReport

__all__ = ["add_eval", "add_parity"]

_IDENTICAL = {"auto": None, "yes": True, "no": False}


def add_eval(sub: Any) -> None:
    p = subparser(sub, "eval", "retrieval quality on a BEIR-format dataset (nDCG@10, Recall@100, ...)",
                  "Embed the corpus of a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv),\n"
                  "retrieve the --top-k documents of each judged query by exact cosine search, optionally\n"
                  "rerank the best --candidates, and report nDCG@10, Recall@100, MRR@10 and MAP@10 as\n"
                  "BEIR computes them (pytrec_eval's definitions; BEIR's MRR). Documents are embedded as\n"
                  "title + ' ' + text, as BEIR joins them; corpus vectors are cached under --cache-dir by\n"
                  "model, size and dataset. Qwen3 queries get the dataset's published instruction unless\n"
                  "--instruction is given. The table (or --format json) goes to stdout, progress and\n"
                  "timings to stderr.",
                  "  q3embed eval --data datasets/nfcorpus\n"
                  "  q3embed eval --data datasets/scifact --model ./Qwen3-Embedding-0.6B --dimensions 256\n"
                  "  q3embed eval --data datasets/nfcorpus --rerank --reranker ./Qwen3-Reranker-0.6B --format json\n"
                  "  q3embed eval --data datasets/arguana --ignore-identical-ids yes --output arguana.json")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="BEIR-format dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (required)")
    p.add_argument("--split", default="test", metavar="NAME", help="qrels file to evaluate (default: test)")
    p.add_argument("--instruction", metavar="TEXT",
                   help="Qwen3 query (and reranker) instruction (default: the dataset's published one, "
                        "else the web-search instruction)")
    p.add_argument("--dimensions", type=positive_int, metavar="N",
                   help="keep the first N dimensions (Matryoshka), from 32 to the model's size")
    p.add_argument("--top-k", type=positive_int, default=100, metavar="N",
                   help="documents retrieved per query; Recall@100 needs 100 (default: 100)")
    p.add_argument("--rerank", action="store_true", help="also rerank each query's best --candidates and score that")
    p.add_argument("--reranker", metavar="MODEL", default="auto",
                   help="reranker for --rerank: a directory, a Hugging Face id, or auto (default: auto)")
    p.add_argument("--candidates", type=positive_int, default=100, metavar="N",
                   help="documents per query the reranker reorders (default: 100, as BEIR)")
    p.add_argument("--ignore-identical-ids", choices=tuple(_IDENTICAL), default="auto",
                   help="leave a query's own id out of its results; auto: yes for ArguAna, Quora, FiQA, FEVER, "
                        "MS MARCO and unknown datasets (BEIR's default), no for the other BEIR datasets (as MTEB)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, metavar="DIR",
                   help=f"where corpus vectors are kept between runs (default: {DEFAULT_CACHE_DIR})")
    p.add_argument("--no-cache", action="store_true", help="embed the corpus again and keep nothing")
    p.add_argument("--format", choices=("table", "json"), default="table", help="stdout format (default: table)")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_model_flags(p)
    p.set_defaults(handler=cmd_eval)


def add_parity(sub: Any) -> None:
    p = subparser(sub, "parity", "compare our engine with the transformers reference on a checkpoint",
                  "Run the model through q3embed and through the reference computation of its model card\n"
                  "(transformers for Qwen3-Embedding and Qwen3-Reranker, sentence-transformers for BERT-family\n"
                  "models) on the model cards' example texts, more built-in texts, and the texts given, and\n"
                  "print each text's cosine (embeddings) or score difference (rerankers) and the worst.\n"
                  "Embedding models: TEXT... are documents (queries with --query). Rerankers: the first TEXT\n"
                  'is a query and the others its documents; --input FILE.jsonl holds {"query", "documents"}\n'
                  "lines. Exit code 0 when the worst is within the threshold, 1 when not. Both models are\n"
                  "loaded in memory at once; the reference runs in float32 on the CPU.",
                  "  q3embed parity ./Qwen3-Embedding-0.6B\n"
                  "  q3embed parity ./Qwen3-Embedding-0.6B 'my own text' --query 'my own question'\n"
                  "  q3embed parity ./Qwen3-Reranker-0.6B 'capital of China?' 'Beijing is the capital.'\n"
                  "  q3embed parity ./Qwen3-Embedding-4B --dtype bfloat16 --device cuda --format json")
    p.add_argument("model", metavar="MODEL", help="model directory (or Hugging Face id) with safetensors weights")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="more texts to compare (see above)")
    p.add_argument("--input", type=Path, metavar="FILE",
                   help="more texts: .txt/.jsonl texts (embedding models) or .jsonl rerank requests (rerankers)")
    p.add_argument("--query", action="store_true", help="embed the given texts as queries (embedding models)")
    p.add_argument("--instruction", metavar="TEXT", help="query / reranker instruction (default: the model card's)")
    p.add_argument("--kind", choices=("auto", "embedding", "reranker"), default="auto",
                   help="what the directory holds; auto: a reranker when its keys have lm_head or the model. "
                        "prefix (default: auto)")
    p.add_argument("--min-cosine", type=float, metavar="X",
                   help="embedding threshold (default: 0.99999 in float32, 0.99 in half precision)")
    p.add_argument("--max-difference", type=float, metavar="X",
                   help="reranker score threshold (default: 1e-4 in float32, 0.02 in half precision)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="stdout format (default: table)")
    p.add_argument("--device", metavar="DEVICE", default="cpu", help="where our engine runs (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="our engine's precision; float32 is the exact check (default: float32)")
    p.add_argument("--max-length", type=positive_int, metavar="N",
                   help="longest input in tokens, on both sides (default: the model's)")
    p.add_argument("--max-batch-tokens", type=positive_int, metavar="N",
                   help="tokens per forward pass of our engine (default: 2048 on a CPU, 8192 on a GPU)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: all this process may use)")
    p.set_defaults(handler=cmd_parity)


# ---------------------------------------------------------------- eval


def _eval_config(args: argparse.Namespace) -> EvalConfig:
    from ..evaluate.evaluation import EvalConfig

    return EvalConfig(split=args.split, instruction=args.instruction, dimensions=args.dimensions,
                      top_k=args.top_k, rerank_candidates=args.candidates,
                      ignore_identical_ids=_IDENTICAL[args.ignore_identical_ids],
                      cache_dir=None if args.no_cache else args.cache_dir,
                      progress=not (args.no_progress or args.quiet))


def _write_report(report: EvalReport, args: argparse.Namespace) -> None:
    from ..evaluate.evaluation import format_table

    payload = json.dumps(report.to_json(), indent=2) + "\n"
    sys.stdout.write(payload if args.format == "json" else format_table(report))
    sys.stdout.flush()
    if args.output is not None:
        try:
            args.output.write_text(payload, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {args.output}: {exc.strerror or exc}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    """The dataset is read before the models load, so a wrong path fails in a moment."""
    from ..evaluate.evaluation import evaluate_beir

    if args.data is None:
        raise InputError("--data DIR is required: a BEIR-format folder with corpus.jsonl, queries.jsonl "
                         "and qrels/<split>.tsv")
    if args.output is not None and args.output.is_dir():
        raise InputError(f"--output {args.output} is a directory")
    started = time.perf_counter()
    dataset = load_beir(args.data, args.split)
    loaded = time.perf_counter()
    embedder = engine.Embedder(model_options(args))
    reranker = engine.Reranker(model_options(args, args.reranker)) if args.rerank else None
    before = {"load": loaded - started, "models": time.perf_counter() - loaded}
    report = evaluate_beir(embedder, dataset, _eval_config(args), reranker, timings=before)
    _write_report(report, args)
    if not args.quiet:
        print(f"{PROG}: eval of {report.dataset} took {report.timings['total']:.1f} s", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parity


def _parity_inputs(args: argparse.Namespace, reranker: bool) -> dict[str, Any]:
    if reranker:
        if args.input is not None:
            return {"pairs": [(r.query, d) for r in read_rerank_requests(args.input) for d in r.documents]}
        if len(args.texts) == 1:
            raise InputError("a reranker needs a query and at least one document: TEXT... is QUERY DOC...")
        return {"pairs": [(args.texts[0], d) for d in args.texts[1:]]}
    texts = list(args.texts) + (read_texts(args.input) if args.input is not None else [])
    return {"queries": texts} if args.query else {"texts": texts}


def _short(text: str, width: int = 64) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_parity(report: ParityReport) -> str:
    label = "cosine" if report.metric == "cosine" else "|diff|"
    sides = f"ours in {report.dtype} on {report.device}, reference in float32 on cpu"
    head = f"model  {report.model} ({report.kind}, {sides})"
    lines = [head, "", f"{'side':<9}{label:>12}  text"]
    lines += [f"{row.side:<9}{row.value:>12.8f}  {_short(row.text)}" for row in report.rows]
    sign = ">=" if report.metric == "cosine" else "<="
    verdict = "PASS" if report.passed else "FAIL"
    lines += ["", f"worst {label} {report.worst:.8f} (threshold {sign} {report.threshold:g}): {verdict}",
              "time   " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())]
    return "\n".join(lines) + "\n"


def cmd_parity(args: argparse.Namespace) -> int:
    from ..evaluate.parity import ParityConfig, check_parity, model_kind

    options = engine.ModelOptions(args.model, device=args.device, dtype=args.dtype, max_length=args.max_length,
                           max_batch_tokens=args.max_batch_tokens, threads=args.threads)
    config = ParityConfig(options, kind=args.kind, instruction=args.instruction,
                          min_cosine=args.min_cosine, max_difference=args.max_difference)
    kind = model_kind(resolve_model(args.model).path, args.kind)
    report = check_parity(args.model, config, **_parity_inputs(args, kind == "qwen3-reranker"))
    if args.format == "json":
        sys.stdout.write(json.dumps(asdict(report), indent=2) + "\n")
    else:
        sys.stdout.write(format_parity(report))
    return 0 if report.passed else 1
