"""embed-corpus: embed a corpus far larger than memory into Parquet shards, resumably.

    job = CorpusJob(input=Path("corpus.jsonl"), output=Path("vectors"), model=ModelOptions("./model"))
    report = embed_corpus(job)            # one process; distributed.ray_data runs the same job on Ray

The job streams the input shard by shard (see corpus_read) and writes each shard when it is
complete (see corpus_write). A shard's content depends on the input rows and the model alone:
rows keep their input order, and a text's vector does not depend on which texts share its batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import ModelOptions, check_dimensions, check_text
from ..errors import InputError
from .corpus_read import CorpusFields, CorpusPlan, RowBlock, plan_corpus, read_shard
from .corpus_write import (
    CorpusManifest,
    ShardData,
    check_same_model,
    finished_shards,
    prepare_output,
    shard_path,
    shard_row_count,
    write_shard,
)

if TYPE_CHECKING:  # the model (and torch) loads when a job runs, not when the CLI builds its parser
    from ..engine import Embedder

__all__ = ["CorpusJob", "CorpusReport", "Progress", "embed_texts", "load_embedder", "plan_job",
           "embed_corpus", "done_rows", "DEFAULT_SHARD_SIZE", "DEFAULT_BATCH_ROWS"]

DEFAULT_SHARD_SIZE = 10_000
DEFAULT_BATCH_ROWS = 1024

# Called after each batch with (rows done, tokens done) since the last call.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CorpusJob:
    """Everything a run needs, picklable for Ray: each worker loads `model` and embeds rows the same way."""

    input: Path
    output: Path
    model: ModelOptions = field(default_factory=ModelOptions)  # threads: CPU threads per worker
    fields: CorpusFields = field(default_factory=CorpusFields)
    query: bool = False
    instruction: str | None = None  # implies query
    dimensions: int | None = None  # Matryoshka size; None: the model's
    shard_size: int = DEFAULT_SHARD_SIZE
    batch_rows: int = DEFAULT_BATCH_ROWS  # rows per call into the engine (progress granularity)
    overwrite: bool = False


@dataclass
class CorpusReport:
    rows: int = 0  # rows of the input
    embedded: int = 0  # rows embedded by this run
    empty: int = 0  # rows left out by this run because their text was empty
    shards: int = 0  # shards of the whole output
    written: int = 0  # shards written by this run
    skipped: int = 0  # shards already finished by an earlier run
    tokens: int = 0  # tokens embedded by this run
    seconds: float = 0.0
    output: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_embedder(options: ModelOptions) -> Embedder:
    from ..engine import Embedder

    return Embedder(options)


def embed_texts(embedder: Embedder, texts: list[str], job: CorpusJob) -> tuple[np.ndarray, list[int]]:
    """(vectors [n, d] float32, tokens per text), through the one embedding path."""
    prepared = embedder.prepare(texts, query=job.query, instruction=job.instruction, dimensions=job.dimensions)
    return embedder.finish(prepared, embedder.run(prepared.token_lists)), prepared.token_counts


def _model_spec(model: str) -> str:
    """A local model path made absolute, so that a resumed run from another folder still matches."""
    path = Path(model).expanduser()
    return str(path.resolve()) if model != "auto" and path.exists() else model


def plan_job(job: CorpusJob) -> tuple[CorpusPlan, CorpusManifest]:
    """Check the input and the output folder before any model loads; returns the plan and manifest."""
    if job.shard_size < 1 or job.batch_rows < 1:
        raise InputError("--shard-size and --batch-rows must be positive integers")
    if job.instruction is not None:
        check_text(job.instruction, "--instruction")
    plan = plan_corpus(job.input, job.fields, job.shard_size)
    stat = plan.path.stat()
    manifest = CorpusManifest(
        input=str(plan.path), input_bytes=stat.st_size, input_mtime_ns=stat.st_mtime_ns,
        model=_model_spec(job.model.model), dtype=str(job.model.dtype), max_length=job.model.max_length,
        dimensions=job.dimensions, query=job.query or job.instruction is not None, instruction=job.instruction,
        text_field=plan.fields.text_field, id_field=plan.fields.id_field or "", title_field=plan.fields.title_field,
        shard_size=plan.shard_size)
    prepare_output(job.output, manifest, job.overwrite)
    return plan, manifest


def done_rows(job: CorpusJob, done: set[int]) -> int:
    """Rows of the input covered by finished shards (the progress bar starts there)."""
    return sum(shard_row_count(shard_path(job.output, k)) for k in done)


def _embed_shard(embedder: Embedder, block: RowBlock, job: CorpusJob, progress: Progress | None) -> ShardData:
    parts: list[np.ndarray] = []
    tokens: list[int] = []
    for begin in range(0, len(block.texts), job.batch_rows):
        vectors, counts = embed_texts(embedder, block.texts[begin:begin + job.batch_rows], job)
        parts.append(vectors)
        tokens.extend(counts)
        if progress:
            progress(len(counts), sum(counts))
    dims = parts[0].shape[1] if parts else (job.dimensions or embedder.dimensions)
    vectors = np.concatenate(parts) if parts else np.zeros((0, dims), dtype=np.float32)
    return ShardData(block.ids, vectors, tokens, embedder.info.name, dims)


def embed_corpus(job: CorpusJob, progress: Progress | None = None, embedder: Embedder | None = None,
                 planned: tuple[CorpusPlan, CorpusManifest] | None = None) -> CorpusReport:
    """Embed every unfinished shard in this process; `embedder` may be given to reuse a loaded model."""
    started = time.perf_counter()
    plan, _ = planned or plan_job(job)
    done = finished_shards(job.output, plan.shards)
    report = CorpusReport(rows=plan.rows, shards=plan.shards, skipped=len(done), output=str(job.output))
    if len(done) < plan.shards:
        embedder = embedder or load_embedder(job.model)
        size = check_dimensions(job.dimensions, embedder.dimensions) or embedder.dimensions
        check_same_model(job.output, done, embedder.info.name, size)
        for shard in range(plan.shards):
            if shard in done:
                continue
            block, empty = read_shard(plan, shard)
            data = _embed_shard(embedder, block, job, progress)
            if progress and empty:
                progress(empty, 0)
            write_shard(job.output, shard, data)
            report.embedded += len(block.ids)
            report.empty += empty
            report.tokens += sum(data.tokens)
            report.written += 1
    report.seconds = time.perf_counter() - started
    return report
