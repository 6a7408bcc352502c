"""The retrieval commands: index (ingest files), search, and collections (list, describe, drop, delete).

All of them sit on `q3embed.pipeline.Collections`. Collections live under --store-dir (the
embedded FAISS + SQLite store), or in Milvus when --milvus-uri is given (a path ending in .db is
Milvus Lite, http://host:19530 a cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import engine  # its model classes load torch on first use, in the handlers
from ..errors import ConfigurationError, InputError, ModelNotFoundError, NotFoundError, Q3EmbedError
from ..pipeline import Collections, ReaderOptions, UpsertReport, count_source, read_source
from ..pipeline.search import MAX_TOP_K
from ..store import COLLECTION_NAME_RULE, INDEX_KINDS, StoreConfig, default_store_dir, open_store
from ..store.protocol import CollectionInfo
from .common import PROG, add_model_flags, model_options, non_negative_int, positive_int, subparser
from .io import write_jsonl

__all__ = ["add_index", "add_search", "add_collections"]

ACTIONS = ("list", "describe", "drop", "delete")
MAX_SKIPPED_SHOWN = 20


def _top_k(text: str) -> int:
    value = positive_int(text)
    if value > MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"at most {MAX_TOP_K}, got {value}")
    return value


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store-dir", type=Path, metavar="DIR",
                   help=f"where the embedded store keeps collections (default: {default_store_dir()})")
    p.add_argument("--milvus-uri", metavar="URI",
                   help="use Milvus instead: a file path ending in .db (Milvus Lite, embedded) or "
                   "http://host:19530 (a Milvus server or cluster)")
    p.add_argument("--milvus-token", metavar="TOKEN", help="user:password or API key of a secured Milvus")


def _add_collection_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", "-c", metavar="NAME", help=f"the collection ({COLLECTION_NAME_RULE})")


def add_index(sub: Any) -> None:
    p = subparser(sub, "index", "read, chunk, embed and store documents in a collection",
                  "Ingest a folder of .txt / .md / .html files (recursively; id = path in the folder),\n"
                  "or JSONL / CSV / TSV files with a text column (id and the other columns as metadata).\n"
                  "Texts are split into chunks of --chunk-size tokens, embedded, and stored. The\n"
                  "collection is created on first use with the model it is built with; later runs\n"
                  "skip unchanged documents (content hash) and replace changed ones, so re-running an\n"
                  "interrupted ingest resumes it. Binary, unreadable and empty files are skipped and\n"
                  "listed. Prints a JSON report on stdout and a summary on stderr.",
                  "  q3embed index ./docs --collection docs\n"
                  "  q3embed index corpus.jsonl -c corpus --text-field body --id-field _id --chunk-size 256\n"
                  "  q3embed index ./docs -c docs --milvus-uri ./milvus.db\n"
                  "  q3embed index ./docs -c docs --index hnsw --dimensions 256")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders and files to ingest")
    _add_collection_flag(p)
    p.add_argument("--chunk-size", type=positive_int, metavar="N",
                   help="tokens per chunk for a new collection (default: 512, at most the model's length)")
    p.add_argument("--chunk-overlap", type=non_negative_int, metavar="N",
                   help="tokens shared by neighbouring chunks, for a new collection (default: 64)")
    p.add_argument("--index", choices=INDEX_KINDS, help="vector index of a new collection: flat (exact, "
                   "the default) or hnsw (approximate, faster on millions of chunks)")
    p.add_argument("--dimensions", type=positive_int, metavar="N",
                   help="store the first N dimensions (Matryoshka) in a new collection (default: all)")
    p.add_argument("--text-field", default="text", metavar="NAME", help="JSONL/CSV field with the text (default: text)")
    p.add_argument("--id-field", default="id", metavar="NAME",
                   help="JSONL/CSV field with the document id (default: id; missing: FILE:LINE)")
    p.add_argument("--metadata-fields", metavar="A,B",
                   help="JSONL/CSV fields kept as metadata (default: all but the text and id)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_store_flags(p)
    add_model_flags(p)
    p.set_defaults(handler=cmd_index)


def add_search(sub: Any) -> None:
    p = subparser(sub, "search", "search a collection, optionally reranking the best chunks",
                  "Embed the query with its instruction, take the --top-k most similar chunks (cosine)\n"
                  "among those whose document metadata matches --filter, and with --rerank let the\n"
                  "reranker reorder the best --candidates first. Prints JSON lines, best first:\n"
                  '{"rank", "document_id", "chunk_index", "start", "end", "score", "vector_score",\n'
                  '"rerank_score", "text", "metadata"}. Filters are JSON: {"lang": "en"},\n'
                  '{"year": {"$gte": 2020}}, {"tag": {"$in": ["a", "b"]}}, {"$or": [...]}; operators\n'
                  "$eq $ne $gt $gte $lt $lte $in $nin; a missing field never matches.",
                  "  q3embed search 'how do magnets work?' --collection docs\n"
                  "  q3embed search 'capital of China' -c docs --top-k 3 --filter '{\"lang\": \"en\"}'\n"
                  "  q3embed search 'capital of China' -c docs --rerank --reranker Qwen/Qwen3-Reranker-0.6B")
    p.add_argument("query", metavar="QUERY", help="what to look for")
    _add_collection_flag(p)
    p.add_argument("--top-k", type=_top_k, default=10, metavar="N", help="results to return (default: 10)")
    p.add_argument("--filter", metavar="JSON", help="metadata filter, e.g. '{\"lang\": \"en\"}'")
    p.add_argument("--rerank", action="store_true", help="reorder the best candidates with the reranker")
    p.add_argument("--candidates", type=_top_k, metavar="N",
                   help="chunks the reranker looks at (default: 4 x top-k, at most 100)")
    p.add_argument("--reranker", metavar="MODEL", default="auto",
                   help="reranker for --rerank: a directory, a Hugging Face id, or auto (default: auto)")
    p.add_argument("--instruction", metavar="TEXT",
                   help="task instruction for the query (and reranker) prompt (default: web search)")
    _add_store_flags(p)
    add_model_flags(p)
    p.set_defaults(handler=cmd_search)


def add_collections(sub: Any) -> None:
    p = subparser(sub, "collections", "list, describe, drop collections, or delete documents",
                  "  list               one JSON line per collection (model, dimensions, counts, ...)\n"
                  "  describe NAME      the collection's record and counts, as JSON\n"
                  "  drop NAME          delete the collection and everything in it\n"
                  "  delete NAME --id ID [--id ID ...]   delete documents by id",
                  "  q3embed collections list\n"
                  "  q3embed collections describe docs\n"
                  "  q3embed collections delete docs --id guide/intro.md --id faq.md\n"
                  "  q3embed collections drop docs --milvus-uri ./milvus.db")
    p.add_argument("action", choices=ACTIONS, metavar="ACTION", help=f"one of: {', '.join(ACTIONS)}")
    p.add_argument("name", nargs="?", metavar="NAME", help="the collection (all actions but list)")
    p.add_argument("--id", action="append", metavar="ID", dest="ids",
                   help="document id to delete (repeatable; the environment twin takes a comma-separated list)")
    _add_store_flags(p)
    p.set_defaults(handler=cmd_collections)


# ---------------------------------------------------------------- helpers


def _store_config(args: argparse.Namespace) -> StoreConfig:
    return StoreConfig(directory=args.store_dir, milvus_uri=args.milvus_uri or None,
                       milvus_token=args.milvus_token or None)


@contextlib.contextmanager
def _collections(args: argparse.Namespace) -> Iterator[Collections]:
    """The service over the chosen store; failures of the Milvus client become one-line errors."""
    if args.milvus_uri:  # pymilvus logs each failed call with a traceback; the error line below says it
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    try:
        cols = Collections(open_store(_store_config(args)))
        try:
            yield cols
        finally:
            cols.close()
    except Q3EmbedError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "pymilvus":
            raise
        raise ConfigurationError(f"Milvus at {args.milvus_uri}: {exc}") from None


def _collection_name(args: argparse.Namespace) -> str:
    if not args.collection:
        raise InputError("which collection? pass --collection NAME (or set Q3EMBED_COLLECTION)")
    return args.collection


def _existing_info(cols: Collections, name: str) -> CollectionInfo | None:
    try:
        return cols.store.collection_info(name)
    except NotFoundError:
        return None


def _load_embedder(args: argparse.Namespace, info: CollectionInfo | None) -> "engine.Embedder":
    """`auto` means the model the collection was built with, when it exists and can be loaded."""
    if args.model == "auto" and info is not None:
        try:
            return engine.Embedder(model_options(args, info.model))
        except ModelNotFoundError:
            pass  # e.g. built with the bundled fallback model: auto finds it again, or check_model says why not
    return engine.Embedder(model_options(args))


# ---------------------------------------------------------------- commands


def _progress_bar(args: argparse.Namespace) -> Any:
    from tqdm import tqdm

    total = 0
    for path in args.paths:
        count = count_source(path)
        total = None if count is None or total is None else total + count
    return tqdm(total=total, unit="doc", file=sys.stderr, disable=args.no_progress or None,
                desc=f"{PROG} index", dynamic_ncols=True)


def _summary(name: str, report: UpsertReport) -> str:
    rate = report.documents / report.seconds if report.seconds > 0 else 0.0
    return (f"{PROG}: indexed {report.documents:,} documents into {name!r} ({report.added:,} new, "
            f"{report.updated:,} updated, {report.unchanged:,} unchanged): {report.chunks:,} chunks, "
            f"{report.tokens:,} tokens, {len(report.skipped):,} skipped, {report.seconds:.1f} s ({rate:.1f} docs/s)")


def cmd_index(args: argparse.Namespace) -> int:
    name = _collection_name(args)
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:  # before any model loads
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    fields = tuple(f.strip() for f in args.metadata_fields.split(",") if f.strip()) if args.metadata_fields else None
    options = ReaderOptions(text_field=args.text_field, id_field=args.id_field, metadata_fields=fields)
    with _collections(args) as cols:
        cols.embedder = _load_embedder(args, _existing_info(cols, name))
        cols.create(name, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
                    index=args.index or "flat", dimensions=args.dimensions, exist_ok=True)
        items = (item for path in args.paths for item in read_source(path, options))
        bar = _progress_bar(args)
        done = [0]

        def progress(report: UpsertReport) -> None:
            now = report.documents + len(report.skipped)
            bar.update(now - done[0])
            done[0] = now

        try:
            report = cols.upsert(name, items, skip_invalid=True, progress=progress)
        finally:
            bar.close()
    for skipped in report.skipped[:MAX_SKIPPED_SHOWN]:
        print(f"{PROG}: skipped {skipped.source}: {skipped.reason}", file=sys.stderr)
    if len(report.skipped) > MAX_SKIPPED_SHOWN:
        print(f"{PROG}: ... and {len(report.skipped) - MAX_SKIPPED_SHOWN} more skipped (all are in the JSON report)",
              file=sys.stderr)
    print(_summary(name, report), file=sys.stderr)
    write_jsonl([{"collection": name, **report.as_dict()}])
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    name = _collection_name(args)
    with _collections(args) as cols:
        info = cols.store.collection_info(name)  # NotFoundError before any model loads
        cols.embedder = _load_embedder(args, info)
        if args.rerank:
            cols.reranker = engine.Reranker(model_options(args, args.reranker))
        result = cols.search(name, args.query, top_k=args.top_k, filter=args.filter, rerank=args.rerank,
                             candidates=args.candidates, instruction=args.instruction)
    write_jsonl({"rank": h.rank, "document_id": h.document_id, "chunk_index": h.chunk_index, "start": h.start,
                 "end": h.end, "score": h.score, "vector_score": h.vector_score, "rerank_score": h.rerank_score,
                 "text": h.text, "metadata": h.metadata} for h in result.hits)
    return 0


def _ids(values: list[str] | str | None) -> list[str]:
    """--id values as given; the environment twin (one string) is a comma-separated list."""
    if isinstance(values, str):
        return [part.strip() for part in values.split(",") if part.strip()]
    return list(values or [])


def cmd_collections(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise InputError(f"'collections {args.action}' needs the collection NAME")
    ids = _ids(args.ids)
    if args.action == "delete" and not ids:
        raise InputError("'collections delete' needs at least one --id")
    if args.action != "delete" and args.ids and not isinstance(args.ids, str):
        raise InputError("--id applies to 'collections delete' only")
    with _collections(args) as cols:
        if args.action == "list":
            write_jsonl(d.as_dict() for d in cols.list())
        elif args.action == "describe":
            write_jsonl([cols.describe(args.name).as_dict()])
        elif args.action == "drop":
            cols.drop(args.name)
            print(f"{PROG}: dropped collection {args.name!r} from {cols.store.location}", file=sys.stderr)
        else:
            report = cols.delete(args.name, ids)
            write_jsonl([{"collection": args.name, "deleted": report.deleted, "missing": report.missing}])
    return 0
