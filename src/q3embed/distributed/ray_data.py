"""embed-corpus on a Ray cluster through Ray Data, writing exactly the shards one process writes.

    shard descriptors ──map_batches(read)──> rows (shard, row, id, text)
                      ──map_batches(ShardEmbedder, concurrency=N)──> (shard, row, id, vector, tokens)
                      ──iter_batches──> the driver sorts each shard's rows and writes part-k.parquet

The driver plans the job as the single-process run does (shard k = input rows [k*S, (k+1)*S)),
so resuming, the manifest and the files are the same; Ray only decides where the work runs.
Each worker is an actor holding one Embedder: one per GPU on GPU nodes, otherwise one per
--threads CPUs. Workers read the input themselves, so INPUT must be at the same path on every
node (a shared file system); only the driver writes OUTPUT.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigurationError, Q3EmbedError
from ..pipeline.corpus import CorpusJob, CorpusReport, Progress, embed_texts, load_embedder, plan_job
from ..pipeline.corpus_read import CorpusPlan, read_shard
from ..pipeline.corpus_write import CorpusManifest, ShardData, check_same_model, finished_shards, write_shard
from . import connect, our_error, require_ray

__all__ = ["RayOptions", "ShardEmbedder", "embed_corpus_ray"]

DEFAULT_CPUS_PER_WORKER = 4  # a CPU worker's torch threads when --threads is not given


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray for this job; "auto" or ray://...: join a cluster
    workers: int | None = None  # None: one per GPU, else the cluster's CPUs / CPUs per worker


class ShardEmbedder:
    """Ray Data actor: loads the model once, then embeds batch after batch."""

    def __init__(self, job: CorpusJob) -> None:
        self.job = job
        self.embedder = load_embedder(job.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors, tokens = embed_texts(self.embedder, [str(t) for t in batch["text"]], self.job)  # [b, d]
        return {"shard": batch["shard"], "row": batch["row"], "id": batch["id"], "vector": vectors,
                "tokens": np.asarray(tokens, dtype=np.int32),
                "model": np.full(len(tokens), self.embedder.info.name, dtype=object)}


def _read_shards(batch: dict[str, np.ndarray], plan: CorpusPlan) -> dict[str, np.ndarray]:
    """Ray Data step: shard numbers in, their rows with a text out."""
    shards, rows, ids, texts = [], [], [], []
    for shard in batch["shard"]:
        block, _ = read_shard(plan, int(shard))
        shards += [int(shard)] * len(block.rows)
        rows += block.rows
        ids += block.ids
        texts += block.texts
    return {"shard": np.asarray(shards, dtype=np.int64), "row": np.asarray(rows, dtype=np.int64),
            "id": np.asarray(ids, dtype=object), "text": np.asarray(texts, dtype=object)}


def _cpus_per_node(ray: Any) -> float:
    return max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=1.0)


def _placement(ray: Any, options: RayOptions, job: CorpusJob) -> tuple[int, dict[str, float], CorpusJob]:
    """(workers, Ray resources of each, the job as a worker runs it); refuses what cannot be placed,
    since Ray would wait for it forever."""
    settings = job.model
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus and not str(settings.device).startswith("cpu"):
        if (options.workers or gpus) > gpus:
            raise ConfigurationError(f"--workers {options.workers} needs a GPU each; the Ray cluster has {gpus}")
        return options.workers or gpus, {"num_gpus": 1, "num_cpus": 1}, job
    threads = settings.threads or int(min(DEFAULT_CPUS_PER_WORKER, max(1.0, _cpus_per_node(ray))))
    workers = options.workers or max(1, cpus // threads)
    if workers * threads > cpus:
        raise ConfigurationError(f"{workers} workers x {threads} CPUs each need more than the Ray cluster's {cpus} "
                                 "CPUs: lower --workers or --threads")
    return workers, {"num_cpus": threads}, replace(job, model=replace(settings, threads=threads))


def _dataset(ray: Any, plan: CorpusPlan, pending: list[int], job: CorpusJob, options: RayOptions) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver draws one bar for the whole job
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # lines would break the bar; errors are raised
    workers, resources, worker_job = _placement(ray, options, job)
    shards = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
    # Reading reserves no CPU: the workers hold the CPUs, and a read waiting for one would stall them.
    rows = shards.map_batches(_read_shards, batch_size=1, fn_kwargs={"plan": plan}, num_cpus=0,
                              compute=ray.data.TaskPoolStrategy(size=max(1, workers)))
    return rows.map_batches(ShardEmbedder, batch_size=job.batch_rows, fn_constructor_args=(worker_job,),
                            compute=ray.data.ActorPoolStrategy(size=workers), **resources)


class _ShardAssembler:
    """Collects each shard's rows as they arrive (in any order) and writes the shard once complete."""

    def __init__(self, job: CorpusJob, plan: CorpusPlan, pending: list[int], done: set[int]) -> None:
        self.job, self.plan, self.done = job, plan, done
        self.expected = {k: plan.kept[k] for k in pending}
        self.parts: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in pending}
        self.received = dict.fromkeys(pending, 0)
        self.model: tuple[str, int] | None = None
        self.written = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        if self.model is None and len(batch["row"]):
            self.model = (str(batch["model"][0]), int(batch["vector"].shape[1]))
            check_same_model(self.job.output, self.done, *self.model)
        for shard in np.unique(batch["shard"]):
            mask = batch["shard"] == shard
            k = int(shard)
            self.parts[k].append({name: values[mask] for name, values in batch.items()})
            self.received[k] += int(mask.sum())
            if self.received[k] == self.expected[k]:
                self._write(k)

    def finish(self) -> None:
        """Shards without a single text (all rows empty) are written last, when the vector size is known."""
        for k in [k for k, parts in self.parts.items() if self.expected[k] == 0]:
            self._write(k)
        missing = [k for k in self.parts if self.received[k] != self.expected[k]]
        if missing:
            raise Q3EmbedError(f"Ray returned an incomplete result for shards {missing[:5]}; run the job again "
                               "to finish them (finished shards are kept)")

    def _write(self, k: int) -> None:
        parts = self.parts.pop(k)
        model, dims = self.model or (self.job.model.model, self.job.dimensions or 0)
        if parts:
            merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            order = np.argsort(merged["row"], kind="stable")  # back to input order
            data = ShardData([str(i) for i in merged["id"][order]], np.asarray(merged["vector"][order], np.float32),
                             [int(t) for t in merged["tokens"][order]], model, dims)
        else:
            data = ShardData([], np.zeros((0, dims), dtype=np.float32), [], model, dims)
        write_shard(self.job.output, k, data)
        self.written += 1


def _run(ray: Any, job: CorpusJob, options: RayOptions, progress: Progress | None, report: CorpusReport,
         plan: CorpusPlan, done: set[int]) -> None:
    pending = [k for k in range(plan.shards) if k not in done]
    assembler = _ShardAssembler(job, plan, pending, done)
    try:
        for batch in _dataset(ray, plan, pending, job, options).iter_batches(batch_size=None, batch_format="numpy"):
            assembler.add(batch)
            if progress:
                progress(len(batch["row"]), int(batch["tokens"].sum()))
            report.embedded += len(batch["row"])
            report.tokens += int(batch["tokens"].sum())
    except Exception as exc:
        original = our_error(exc)
        if original is None or original is exc:
            raise
        raise original from None
    assembler.finish()
    report.written = assembler.written
    report.empty = sum(plan.shard_rows(k) - plan.kept[k] for k in pending)
    if progress and report.empty:
        progress(report.empty, 0)


def embed_corpus_ray(job: CorpusJob, options: RayOptions = RayOptions(), progress: Progress | None = None,
                     planned: tuple[CorpusPlan, CorpusManifest] | None = None) -> CorpusReport:
    """The single-process job of pipeline.corpus, with the embedding spread over Ray workers."""
    ray = require_ray()
    started = time.perf_counter()
    plan, _ = planned or plan_job(job)
    done = finished_shards(job.output, plan.shards)
    report = CorpusReport(rows=plan.rows, shards=plan.shards, skipped=len(done), output=str(job.output))
    if len(done) < plan.shards:
        owned = connect(ray, options.address)
        try:
            _run(ray, job, options, progress, report, plan, done)
        finally:
            if owned:
                ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report
