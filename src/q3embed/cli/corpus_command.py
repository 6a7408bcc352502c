"""`q3embed embed-corpus`: a corpus larger than memory into Parquet shards, in one process or on Ray."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline.corpus import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_SHARD_SIZE,
    CorpusJob,
    CorpusReport,
    done_rows,
    embed_corpus,
    plan_job,
)
from ..pipeline.corpus_read import CorpusFields
from ..pipeline.corpus_write import finished_shards
from .common import PROG, add_model_flags, add_query_flags, model_options, positive_int, subparser
from .env import ENV_PREFIX, FALSE_WORDS, TRUE_WORDS
from .io import write_jsonl

__all__ = ["add_embed_corpus", "add_ray_flag", "ray_address"]

LOCAL_RAY = "local"


def add_ray_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """--ray [ADDRESS], shared by embed-corpus and serve so that scripts spell it the same way."""
    parser.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                        help=f"{what} (pip install 'q3embed[ray]'): alone or 'local' starts a Ray on this "
                        "machine for the run; 'auto' joins the cluster this machine belongs to; "
                        "ray://HOST:10001 joins a remote one (the environment twin also takes 1/0)")


def ray_address(value: str | None) -> tuple[bool, str | None]:
    """(use Ray, address to join or None to start a local Ray) from the --ray value or its twin."""
    if value is None or value.strip().lower() in FALSE_WORDS:
        return False, None
    if value.strip().lower() in TRUE_WORDS | {LOCAL_RAY}:
        return True, None
    return True, value.strip()


def add_embed_corpus(sub: Any) -> None:
    p = subparser(sub, "embed-corpus", "embed a large JSONL / Parquet / CSV corpus into Parquet shards",
                  "Stream INPUT (.jsonl, .csv, .tsv or .parquet; never loaded whole) and write its vectors to\n"
                  "--output as Parquet shards: part-00000.parquet holds input rows [0, S), part-00001 rows\n"
                  "[S, 2S), ... with columns id, vector (float32[d]), model, dimensions, tokens; rows keep the\n"
                  "input order and the output does not depend on batch sizes or worker count. A shard file\n"
                  "appears only once complete, so re-running an interrupted job skips finished shards\n"
                  "(manifest.json records the job; a different job needs a new --output or --overwrite).\n"
                  "Rows with an empty text are left out. With --ray the same job runs on a Ray cluster\n"
                  "(Ray Data; one model per GPU, or per --threads CPUs) and writes the same files; INPUT\n"
                  "must then be at the same path on every node. A progress bar (rows, tokens/s, ETA) and a\n"
                  "summary go to stderr, a JSON report to stdout.",
                  "  q3embed embed-corpus corpus.jsonl --output vectors/\n"
                  "  q3embed embed-corpus corpus.parquet --output vectors/ --text-field body --dimensions 256\n"
                  "  q3embed embed-corpus queries.csv --output qvec/ --query --id-field qid\n"
                  "  q3embed embed-corpus /shared/corpus.jsonl --output vectors/ --ray auto\n"
                  "  q3embed embed-corpus corpus.jsonl --output vectors/ --ray --workers 2 --threads 1")
    p.add_argument("input", type=Path, metavar="INPUT", help="a .jsonl/.ndjson, .csv, .tsv or .parquet file")
    out = p.add_argument("--output", "-o", type=Path, metavar="DIR", help="folder for the shards (required)")
    out.env_var = ENV_PREFIX + "CORPUS_OUTPUT"  # type: ignore[attr-defined]  # Q3EMBED_OUTPUT is embed's file
    p.add_argument("--text-field", default="text", metavar="NAME", help="field with the text (default: text)")
    p.add_argument("--id-field", metavar="NAME",
                   help="field with the row's id (default: _id or id when the input has one, else the row number)")
    p.add_argument("--title-field", metavar="NAME",
                   help="field put in front of the text, as BEIR does: 'title text' (default: none)")
    add_query_flags(p, "rows")
    p.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help=f"input rows per shard file (default: {DEFAULT_SHARD_SIZE})")
    p.add_argument("--batch-rows", type=positive_int, default=DEFAULT_BATCH_ROWS, metavar="N",
                   help="rows handed to the model at a time; does not change the output "
                   f"(default: {DEFAULT_BATCH_ROWS})")
    p.add_argument("--overwrite", action="store_true", help="delete the shards already in --output and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_ray_flag(p, "run the job on Ray (Ray Data)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="with --ray: model replicas (default: one per GPU, else the cluster's CPUs / --threads)")
    add_model_flags(p)
    p.set_defaults(handler=cmd_embed_corpus)


def _job(args: argparse.Namespace) -> CorpusJob:
    if args.output is None:
        raise InputError("where should the shards go? pass --output DIR (or set Q3EMBED_CORPUS_OUTPUT)")
    fields = CorpusFields(text_field=args.text_field, id_field=args.id_field or None,
                          title_field=args.title_field or None)
    return CorpusJob(input=args.input, output=args.output, model=model_options(args), fields=fields,
                     query=args.query, instruction=args.instruction, dimensions=args.dimensions,
                     shard_size=args.shard_size, batch_rows=args.batch_rows, overwrite=args.overwrite)


class _Bar:
    """tqdm over rows, with tokens/s; starts at the rows of shards an earlier run finished."""

    def __init__(self, total: int, initial: int, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="row", file=sys.stderr, disable=disable or None,
                        desc=f"{PROG} embed-corpus", dynamic_ncols=True, smoothing=0.1)
        self.tokens, self.started = 0, time.perf_counter()

    def __call__(self, rows: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()


def _summary(report: CorpusReport) -> str:
    seconds = max(report.seconds, 1e-9)
    return (f"{PROG}: embedded {report.embedded:,} rows into {report.written:,} shards "
            f"({report.skipped:,} of {report.shards:,} shards were already done, {report.empty:,} empty rows left "
            f"out): {report.tokens:,} tokens in {report.seconds:.1f} s ({report.embedded / seconds:,.1f} rows/s, "
            f"{report.tokens / seconds:,.0f} tokens/s) -> {report.output}")


def cmd_embed_corpus(args: argparse.Namespace) -> int:
    use_ray, address = ray_address(args.ray)
    if args.workers and not use_ray:
        raise InputError("--workers applies to --ray runs only (one process uses --threads)")
    job = _job(args)
    planned = plan_job(job)  # the input is read and checked before any model loads
    plan = planned[0]
    bar = _Bar(plan.rows, done_rows(job, finished_shards(job.output, plan.shards)), args.no_progress or args.quiet)
    try:
        if use_ray:
            from ..distributed.ray_data import RayOptions, embed_corpus_ray

            report = embed_corpus_ray(job, RayOptions(address=address, workers=args.workers), bar, planned)
        else:
            report = embed_corpus(job, bar, planned=planned)
    finally:
        bar.close()
    print(_summary(report), file=sys.stderr)
    seconds = max(report.seconds, 1e-9)
    write_jsonl([{**report.as_dict(), "rows_per_s": round(report.embedded / seconds, 2),
                  "tokens_per_s": round(report.tokens / seconds, 1)}])
    return 0
