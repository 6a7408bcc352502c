"""The `q3embed` command: embed, rerank, similarity and info on top of the engine API.

Design rules: data (JSON lines, .npy) goes to stdout or --output, messages go to stderr; every
mistake a user can make ends in one line `q3embed: error: ...` and exit code 2, never a traceback;
every option has a Q3EMBED_* environment twin (command line > environment > default) so that
containers and scripts can configure the tool without rewriting command lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .cli_io import RerankRequest, check_output_path, collect_rerank_requests, collect_texts
from .cli_io import write_embeddings, write_jsonl
from .engine import Embedder, Reranker, RerankResult, similarity
from .engine.device import cpu_has_fast_bf16
from .errors import ConfigurationError, Q3EmbedError

__all__ = ["main", "build_parser"]

PROG = "q3embed"
ENV_PREFIX = "Q3EMBED_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
DTYPES = ("auto", "float32", "bfloat16", "float16")
Handler = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- environment twins


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The --flags of one parser (not --help/--version, not positionals, not subcommands)."""
    skip = (argparse._HelpAction, argparse._VersionAction)
    return [a for a in parser._actions if a.option_strings and not isinstance(a, skip)]


def _env_name(action: argparse.Action) -> str:
    """--max-batch-tokens -> Q3EMBED_MAX_BATCH_TOKENS, unless the flag was given its own name."""
    explicit = getattr(action, "env_var", None)
    if explicit:
        return explicit
    long = next(s for s in action.option_strings if s.startswith("--"))
    return ENV_PREFIX + long.removeprefix("--").upper().replace("-", "_")


def annotate_env(parser: argparse.ArgumentParser) -> None:
    """Record each flag's env twin and show it in --help, so the two can never disagree."""
    for action in _options(parser):
        action.env_var = _env_name(action)  # type: ignore[attr-defined]
        action.help = f"{action.help} [env: {action.env_var}]"  # type: ignore[attr-defined]


def _env_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use 1/true/yes/on or 0/false/no/off")


def _env_value(action: argparse.Action, raw: str) -> Any:
    """Convert and check an env value exactly as argparse would check the same text on the command line."""
    name = action.env_var  # type: ignore[attr-defined]
    if action.nargs == 0:  # store_true / store_false
        return action.const if _env_bool(name, raw) else action.default
    try:
        value = action.type(raw) if callable(action.type) else raw
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{name}={raw!r}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigurationError(f"{name}={raw!r}: choose from {', '.join(map(str, action.choices))}")
    return value


def apply_env(parsers: Sequence[argparse.ArgumentParser], environ: Mapping[str, str]) -> list[str]:
    """Turn set Q3EMBED_* variables into argparse defaults; a flag given on the command line still wins.

    Returns the problems instead of raising, so that `--help` works even with a broken variable.
    Empty variables count as unset.
    """
    problems = []
    for parser in parsers:
        for action in _options(parser):
            raw = environ.get(action.env_var, "")  # type: ignore[attr-defined]
            if raw == "":
                continue
            try:
                action.default = _env_value(action, raw)
            except ConfigurationError as exc:
                problems.append(str(exc))
    return problems


# ---------------------------------------------------------------- the parser


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (sizes, lengths and counts are never zero or negative)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_model_flags(parser: argparse.ArgumentParser, *, what: str = "embedding") -> None:
    """The flags that pick and place a model; the same on every command so scripts can share them."""
    model = parser.add_argument(
        "--model", metavar="MODEL", default="auto",
        help=f"{what} model: a local directory, a Hugging Face id, or auto (default: auto; "
        + ("Qwen/Qwen3-Reranker-0.6B if cached or downloadable, else cosine similarity of embeddings)"
           if what == "reranker" else
           "Qwen/Qwen3-Embedding-0.6B if cached or downloadable, else the bundled all-MiniLM-L6-v2)"))
    if what == "reranker":
        model.env_var = ENV_PREFIX + "RERANKER"  # type: ignore[attr-defined]  # Q3EMBED_MODEL names the embedder
    parser.add_argument("--device", metavar="DEVICE", default="auto",
                        help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="precision; auto = bfloat16 on GPUs and on CPUs with native bf16, "
                        "float32 on other CPUs (default: auto)")
    parser.add_argument("--max-length", type=positive_int, metavar="N",
                        help="longest input in tokens; longer ones are cut (default: the model's, 8192 for Qwen3)")
    parser.add_argument("--max-batch-tokens", type=positive_int, metavar="N", default=8192,
                        help="tokens per forward pass; lower it if memory runs out (default: 8192)")


def _subparser(sub: Any, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_query_flags(parser: argparse.ArgumentParser, first: str = "texts") -> None:
    parser.add_argument("--query", action="store_true",
                        help=f"embed the {first} as search queries (wrapped in the model's query prompt)")
    parser.add_argument("--instruction", metavar="TEXT",
                        help="task instruction for the query prompt; implies --query "
                        "(default: the model card's web-search instruction)")
    parser.add_argument("--dimensions", type=positive_int, metavar="N",
                        help="keep the first N dimensions (Matryoshka), from 32 to the model's size")


def _add_embed(sub: Any) -> None:
    p = _subparser(sub, "embed", "embed texts into vectors",
                   "Embed texts given as arguments or read from --input FILE: .txt holds one text\n"
                   'per non-blank line, .jsonl one JSON string or {"text": ...} object per line.\n'
                   'Output: JSON lines {"index": i, "embedding": [...]} on stdout, or --output FILE\n'
                   "(.npy: one float32 [N, d] array; .jsonl: the same lines). Vectors are float32,\n"
                   "unit length unless --no-normalize.",
                   "  q3embed embed 'The capital of China is Beijing.' 'Gravity is a force.'\n"
                   "  q3embed embed --query 'What is the capital of China?'\n"
                   "  q3embed embed --input docs.txt --output docs.npy --dimensions 256\n"
                   "  q3embed embed --input queries.jsonl --instruction 'Find the matching code' --output q.jsonl\n"
                   "  q3embed embed -- '-text that starts with a dash'")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --input)")
    p.add_argument("--input", type=Path, metavar="FILE", help="read texts from a .txt or .jsonl file")
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="write a float32 [N, d] .npy array or a .jsonl file instead of stdout")
    _add_query_flags(p)
    p.add_argument("--no-normalize", action="store_true", help="return raw pooled vectors, not unit length")
    p.add_argument("--no-truncate", action="store_true",
                   help="fail on texts longer than --max-length instead of cutting them")
    _add_model_flags(p)
    p.set_defaults(handler=cmd_embed)


def _add_rerank(sub: Any) -> None:
    p = _subparser(sub, "rerank", "score documents against a query, best first",
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
    _add_model_flags(p, what="reranker")
    p.set_defaults(handler=cmd_rerank)


def _add_similarity(sub: Any) -> None:
    p = _subparser(sub, "similarity", "cosine similarity of one text with others",
                   "Embed all texts and print the cosine similarity of the first text with each\n"
                   'of the others as JSON lines {"index": i, "text": ..., "similarity": s}\n'
                   "(i is the text's position, the first text being 0), or with --matrix the\n"
                   "full N x N matrix, one JSON array per row.",
                   "  q3embed similarity --query 'What is the capital of China?' 'Beijing...' 'Gravity...'\n"
                   "  q3embed similarity --matrix 'cat' 'kitten' 'car'")
    p.add_argument("first", metavar="TEXT_A", help="the text the others are compared with")
    p.add_argument("others", nargs="+", metavar="TEXT", help="texts to compare with TEXT_A")
    _add_query_flags(p, first="first text (TEXT_A)")
    p.add_argument("--matrix", action="store_true", help="print the full similarity matrix of all texts")
    _add_model_flags(p)
    p.set_defaults(handler=cmd_similarity)


def _add_info(sub: Any) -> None:
    p = _subparser(sub, "info", "load the model(s) and print what was chosen, as JSON",
                   "Load the embedding model (and with --reranker a reranker too) and print JSON:\n"
                   "name, path, kind, dimensions, max length, device and dtype of each model, the\n"
                   "q3embed and torch versions, CUDA availability, and whether this CPU runs bf16\n"
                   "natively (which is when dtype auto picks bfloat16 on CPU).",
                   "  q3embed info\n"
                   "  q3embed info --model ./Qwen3-Embedding-0.6B --reranker ./Qwen3-Reranker-0.6B --device cpu")
    p.add_argument("--reranker", metavar="MODEL",
                   help="also load this reranker (a directory, a Hugging Face id, or auto)")
    _add_model_flags(p)
    p.set_defaults(handler=cmd_info)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree, env twins shown in every flag's help."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Qwen3-Embedding and Qwen3-Reranker from the command line: embed texts, rerank\n"
        "documents, compare texts, and show which model, device and precision would be used.",
        epilog="Run 'q3embed COMMAND --help' for each command's flags and examples.\n\n"
        "Every flag has an environment twin, shown as [env: ...] in the help; a flag on the command\n"
        "line beats the environment, which beats the default. Boolean variables take 1/true/yes/on\n"
        "or 0/false/no/off. Data goes to stdout, messages to stderr; any error exits with code 2.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--quiet", action="store_true", help="do not print warnings such as which model auto chose")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_embed, _add_rerank, _add_similarity, _add_info):
        add(sub)
    for p in _parser_tree(parser):
        annotate_env(p)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _parser_tree(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [parser, *_subcommands(parser).values()]


def _parsers_in_use(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[argparse.ArgumentParser]:
    """The top level and the chosen command only, so that a bad Q3EMBED_TOP_N cannot break `embed`.

    The top level has no flag that takes a value, so the first word not starting with '-' is the command.
    """
    command = next((word for word in argv if not word.startswith("-")), None)
    chosen = _subcommands(parser).get(command) if command else None
    return [parser] if chosen is None else [parser, chosen]


# ---------------------------------------------------------------- the commands


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"device": args.device, "dtype": args.dtype, "max_length": args.max_length,
            "max_batch_tokens": args.max_batch_tokens}


def cmd_embed(args: argparse.Namespace) -> int:
    """Checks the inputs and the output path before the model loads, so mistakes fail fast."""
    texts = collect_texts(args.texts, args.input)
    check_output_path(args.output)
    embedder = Embedder(args.model, **_model_kwargs(args))
    vectors = embedder.encode(
        texts, query=args.query or args.instruction is not None, instruction=args.instruction,
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
    reranker = Reranker(args.model, **_model_kwargs(args))
    for request in requests:
        results = reranker.rerank(request.query, request.documents, top_n=args.top_n,
                                  instruction=args.instruction, truncate=not args.no_truncate)
        write_jsonl(_rerank_rows(request, results, with_query=args.input is not None))
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """The first text may be a query (asymmetric retrieval); the others are always documents."""
    embedder = Embedder(args.model, **_model_kwargs(args))
    first = embedder.encode([args.first], query=args.query or args.instruction is not None,
                            instruction=args.instruction, dimensions=args.dimensions)
    others = embedder.encode(list(args.others), dimensions=args.dimensions)
    if args.matrix:
        vectors = np.concatenate([first, others])
        write_jsonl(row.tolist() for row in similarity(vectors, vectors))
    else:
        scores = similarity(first, others)[0].tolist()
        write_jsonl({"index": i, "text": text, "similarity": score}
                    for i, (text, score) in enumerate(zip(args.others, scores, strict=True), start=1))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Loads the models for real: the point is to see what `auto` resolves to on this machine."""
    report: dict[str, Any] = {"q3embed_version": __version__, "torch_version": torch.__version__,
                              "cuda_available": torch.cuda.is_available(), "cpu_has_fast_bf16": cpu_has_fast_bf16()}
    report["model"] = asdict(Embedder(args.model, **_model_kwargs(args)).info)
    if args.reranker is not None:
        report["reranker"] = asdict(Reranker(args.reranker, **_model_kwargs(args)).info)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- main


def _error(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _attach_log_handler(quiet: bool) -> tuple[logging.Handler, int, bool]:
    """Engine warnings (e.g. 'model auto -> ...') to stderr as 'q3embed: ...'; stdout stays data only."""
    logger = logging.getLogger("q3embed")
    saved = (logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False  # no second copy through a root handler an embedding program set up
    return handler, *saved


def _detach_log_handler(handler: logging.Handler, level: int, propagate: bool) -> None:
    logger = logging.getLogger("q3embed")
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def _run(handler: Handler, args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except Q3EmbedError as exc:
        return _error(str(exc))
    except BrokenPipeError:  # `q3embed embed ... | head`: the reader left; stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `q3embed` script and `python -m q3embed`; returns the exit code.

    The environment is read here, at each call, never at import, so tests and embedding programs
    can change it between calls.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    problems = apply_env(_parsers_in_use(parser, arguments), os.environ)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if problems:
        return _error(problems[0])
    log_state = _attach_log_handler(args.quiet)
    try:
        return _run(args.handler, args)
    finally:
        _detach_log_handler(*log_state)
