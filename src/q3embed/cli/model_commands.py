"""The model commands: embed, rerank, similarity and info."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, engine  # engine's names load torch on first use, in the handlers
from .common import add_model_flags, add_query_flags, model_options, positive_int, subparser
from .io import RerankRequest, check_output_path, collect_rerank_requests, collect_texts, write_embeddings, write_jsonl

if TYPE_CHECKING:
    from ..engine import RerankResult

__all__ = ["add_embed", "add_rerank", "add_similarity", "add_info"]


def add_embed(sub: Any) -> None:
    p = subparser(sub, "embed", "embed texts into vectors",
                   "Embed texts given as arguments or read from --input FILE: .txt holds one text\n"
                   'per non-blank line, .jsonl one JSON string or {"text": ...} object per line,\n'
                   ".csv/.tsv (with a header row) and .parquet a text column.\n"
                   'Output: JSON lines {"index": i, "embedding": [...]} on stdout, or --output FILE\n'
                   "(.npy: one float32 [N, d] array; .jsonl: the same lines). Vectors are float32,\n"
                   "unit length unless --no-normalize.",
                   "  q3embed embed 'The capital of China is Beijing.' 'Gravity is a force.'\n"
                   "  q3embed embed --query 'What is the capital of China?'\n"
                   "  q3embed embed --input docs.txt --output docs.npy --dimensions 256\n"
                   "  q3embed embed --input queries.jsonl --instruction 'Find the matching code' --output q.jsonl\n"
                   "  q3embed embed -- '-text that starts with a dash'")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --input)")
    p.add_argument("--input", type=Path, metavar="FILE",
                   help="read texts from a .txt, .jsonl, .csv, .tsv or .parquet file")
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="write a float32 [N, d] .npy array or a .jsonl file instead of stdout")
    add_query_flags(p)
    p.add_argument("--no-normalize", action="store_true", help="return raw pooled vectors, not unit length")
    p.add_argument("--no-truncate", action="store_true",
                   help="fail on texts longer than --max-length instead of cutting them")
    add_model_flags(p)
    p.set_defaults(handler=cmd_embed)


def add_rerank(sub: Any) -> None:
    p = subparser(sub, "rerank", "score documents against a query, best first",
                   "Score each document's relevance to the query with a Qwen3 reranker and print\n"
                   'JSON lines {"index": i, "score": s, "document": ...}, best first; index is the\n'
                   "document's position in the request. Qwen3 scores are P(yes) in [0, 1].\n"
                   "--input FILE.jsonl holds one request per line:\n"
                   '  {"query": "...", "documents": ["...", "..."]}\n'
                   'and each result line then also carries the request\'s "query".',
                   "  q3embed rerank 'What is the capital of China?' 'Beijing is the capital.' 'Gravity...'\n"
                   "  q3embed rerank --top-n 3 --input requests.jsonl\n"
                   "  q3embed rerank --model ./Qwen3-Reranker-0.6B --instruction 'Find code' 'sort list' 'a.sort()'")
    p.add_argument("query", nargs="?", metavar="QUERY", help="the query (or use --input)")
    p.add_argument("documents", nargs="*", metavar="DOC", help="documents to score against QUERY")
    p.add_argument("--input", type=Path, metavar="FILE",
                   help='read requests from a .jsonl file, one {"query": ..., "documents": [...]} per line')
    p.add_argument("--top-n", type=positive_int, metavar="N", help="print only the N best documents of each query")
    p.add_argument("--instruction", metavar="TEXT",
                   help="task instruction for the reranker prompt (default: the model card's web-search one)")
    p.add_argument("--no-truncate", action="store_true",
                   help="fail on query+document pairs longer than --max-length instead of cutting the document")
    add_model_flags(p, what="reranker")
    p.set_defaults(handler=cmd_rerank)


def add_similarity(sub: Any) -> None:
    p = subparser(sub, "similarity", "cosine similarity of one text with others",
                   "Embed all texts and print the cosine similarity of the first text with each\n"
                   'of the others as JSON lines {"index": i, "text": ..., "similarity": s}\n'
                   "(i is the text's position, the first text being 0), or with --matrix the\n"
                   "full N x N matrix, one JSON array per row.",
                   "  q3embed similarity --query 'What is the capital of China?' 'Beijing...' 'Gravity...'\n"
                   "  q3embed similarity --matrix 'cat' 'kitten' 'car'")
    p.add_argument("first", metavar="TEXT_A", help="the text the others are compared with")
    p.add_argument("others", nargs="+", metavar="TEXT", help="texts to compare with TEXT_A")
    add_query_flags(p, first="first text (TEXT_A)")
    p.add_argument("--matrix", action="store_true", help="print the full similarity matrix of all texts")
    add_model_flags(p)
    p.set_defaults(handler=cmd_similarity)


def add_info(sub: Any) -> None:
    p = subparser(sub, "info", "load the model(s) and print what was chosen, as JSON",
                   "Load the embedding model (and with --reranker a reranker too) and print JSON:\n"
                   "name, path, kind, dimensions, max length, device and dtype of each model, the\n"
                   "q3embed and torch versions, CUDA availability, and whether this CPU runs bf16\n"
                   "natively (which is when dtype auto picks bfloat16 on CPU).",
                   "  q3embed info\n"
                   "  q3embed info --model ./Qwen3-Embedding-0.6B --reranker ./Qwen3-Reranker-0.6B --device cpu")
    p.add_argument("--reranker", metavar="MODEL",
                   help="also load this reranker (a directory, a Hugging Face id, or auto)")
    add_model_flags(p)
    p.set_defaults(handler=cmd_info)



def cmd_embed(args: argparse.Namespace) -> int:
    """Checks the inputs and the output path before the model loads, so mistakes fail fast."""
    texts = collect_texts(args.texts, args.input)
    check_output_path(args.output)
    embedder = engine.Embedder(model_options(args))
    vectors = embedder.encode(
        texts, query=args.query, instruction=args.instruction,
        dimensions=args.dimensions, normalize=not args.no_normalize, truncate=not args.no_truncate,
    )
    write_embeddings(vectors, args.output)
    return 0


def _rerank_rows(request: RerankRequest, results: list[RerankResult], with_query: bool) -> list[dict[str, Any]]:
    head = {"query": request.query} if with_query else {}
    return [{**head, "index": r.index, "score": r.score, "document": request.documents[r.index]} for r in results]


def cmd_rerank(args: argparse.Namespace) -> int:
    """Results are printed request by request, so a long --input file streams its output."""
    requests = collect_rerank_requests(args.query, args.documents, args.input)
    reranker = engine.Reranker(model_options(args))
    for request in requests:
        results = reranker.rerank(request.query, request.documents, top_n=args.top_n,
                                  instruction=args.instruction, truncate=not args.no_truncate)
        write_jsonl(_rerank_rows(request, results, with_query=args.input is not None))
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """The first text may be a query (asymmetric retrieval); the others are always documents."""
    embedder = engine.Embedder(model_options(args))
    first = embedder.encode([args.first], query=args.query, instruction=args.instruction, dimensions=args.dimensions)
    others = embedder.encode(list(args.others), dimensions=args.dimensions)
    if args.matrix:
        vectors = np.concatenate([first, others])
        write_jsonl(row.tolist() for row in engine.similarity(vectors, vectors))
    else:
        scores = engine.similarity(first, others)[0].tolist()
        write_jsonl({"index": i, "text": text, "similarity": score}
                    for i, (text, score) in enumerate(zip(args.others, scores, strict=True), start=1))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Loads the models for real: the point is to see what `auto` resolves to on this machine."""
    import torch

    report: dict[str, Any] = {"q3embed_version": __version__, "torch_version": torch.__version__,
                              "cuda_available": torch.cuda.is_available(),
                              "cpu_has_fast_bf16": engine.cpu_has_fast_bf16()}
    report["model"] = asdict(engine.Embedder(model_options(args)).info)
    if args.reranker is not None:
        report["reranker"] = asdict(engine.Reranker(model_options(args, args.reranker)).info)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0

