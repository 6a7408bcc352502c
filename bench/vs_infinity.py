"""q3embed against Infinity (infinity-emb, its torch engine) on the same texts, each in its own process.

    python bench/vs_infinity.py --setup        # once: a venv of its own for Infinity (~2 minutes)
    python bench/vs_infinity.py [--texts 64] [--rounds 2] [--passes 2]

--setup makes bench/.cache/infinity-venv with infinity-emb (pinned) and the CPU torch this project
pins: Infinity's torch engine is sentence-transformers 3.x, which needs transformers 4.x and numpy 1.x,
so it cannot share q3embed's environment (transformers 5).

The run: the full-size random 0.6B Qwen3-Embedding checkpoint (bf16 safetensors with the official
repos' sentence-transformers files: last-token pooling, normalised; bench/common), the same
standard-library docstrings for both (at most 500 tokens, so neither truncates). Each engine runs in
a fresh child process: load, one warm-up pass, then batch tokens/s over all texts (median of
--rounds), single-query latency (median of 20, the query in the default instruction, the prompt
written out for Infinity, which applies none) and peak RSS. --passes repeats the pair, alternating,
for a noisy machine. The parent prints each run, the ratio and the cosine of Infinity's vectors
against q3embed's.

Infinity's settings: engine="torch", dtype bfloat16 where the CPU multiplies it natively (the dtype
q3embed picks; float32 elsewhere), batch_size 32, bettertransformer off (it has no Qwen3 support),
no torch.compile (its default), model_warmup off (this script warms both up the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("Q3EMBED_BENCH_CACHE", HERE / ".cache"))
VENV = CACHE / "infinity-venv"
INFINITY = "infinity-emb[torch]==0.0.78"
# what Infinity 0.0.78's sentence-transformers 3.x runs on; torch pinned to the local CPU wheel
INFINITY_PINS = ["torch==2.13.0", "transformers>=4.51,<5", "sentence-transformers>=3.4,<4", "numpy<2"]
QUERY = "What is the capital of China?"


def setup() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", INFINITY, *INFINITY_PINS], check=True)
    print(f"Infinity installed in {VENV}")


def median_seconds(fn, times: int):
    """(the median seconds of `times` calls, the last call's result)."""
    seconds, result = [], None
    for _ in range(times):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


# ---------------------------------------------------------------------------- the children


def run_q3embed(model: str, job: dict, rounds: int) -> dict:
    import numpy as np

    from q3embed import Embedder

    embedder = Embedder(model, device="cpu", max_length=512)
    embedder.warm_up()
    items = job["texts"]
    tokens = sum(len(ids) for ids in embedder.tokenize(items))
    embedder.encode(items[:4])
    batch, vectors = median_seconds(lambda: embedder.encode(items), rounds)
    single, _ = median_seconds(lambda: embedder.encode_queries([QUERY]), 20)
    return {"tokens": tokens, "batch_s": batch, "single_ms": 1000 * single, "dtype": embedder.info.dtype,
            "vectors": np.asarray(vectors).tolist()}


def run_infinity(model: str, job: dict, rounds: int) -> dict:
    import asyncio

    import numpy as np
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    args = EngineArgs(model_name_or_path=model, engine="torch", device="cpu", dtype=job["dtype"], batch_size=32,
                      bettertransformer=False, compile=False, model_warmup=False)
    engine = AsyncEmbeddingEngine.from_args(args)
    items = job["texts"]

    async def measure() -> dict:
        async with engine:
            async def embed(texts: list[str]) -> list:
                vectors, usage = await engine.embed(sentences=texts)
                return [vectors, usage]

            await embed(items[:4])
            batch_seconds, last = [], None
            for _ in range(rounds):
                start = time.perf_counter()
                last = await embed(items)
                batch_seconds.append(time.perf_counter() - start)
            single_seconds = []
            for _ in range(20):
                start = time.perf_counter()
                await embed([job["query_prompt"]])
                single_seconds.append(time.perf_counter() - start)
        vectors, usage = last
        return {"tokens": int(usage), "batch_s": statistics.median(batch_seconds),
                "single_ms": 1000 * statistics.median(single_seconds), "dtype": job["dtype"],
                "vectors": np.asarray(vectors, dtype=np.float32).tolist()}

    return asyncio.run(measure())


def child(args: argparse.Namespace) -> None:
    job = json.loads(Path(args.job).read_text())
    runner = run_infinity if args.engine == "infinity" else run_q3embed
    result = runner(args.model, job, args.rounds)
    result["peak_rss_gb"] = peak_rss_gb()
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------- the parent


def make_job(count: int) -> dict:
    sys.path.insert(0, str(HERE))
    from common import checkpoint, stdlib_docstrings
    from tokenizers import Tokenizer

    from q3embed.engine.device import cpu_has_fast_bf16
    from q3embed.text.prompts import query_text

    model_dir = checkpoint("embedding", "0.6B")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    texts = [t for t in stdlib_docstrings(count * 4) if len(tokenizer.encode(t).ids) <= 500][:count]
    return {"model": str(model_dir), "texts": texts, "query_prompt": query_text(QUERY, None),
            "dtype": "bfloat16" if cpu_has_fast_bf16() else "float32"}


def run_child(engine: str, job_file: Path, model: str, rounds: int) -> dict | None:
    python = str(VENV / "bin" / "python") if engine == "infinity" else sys.executable
    result_file = CACHE / "infinity_result.json"
    result_file.unlink(missing_ok=True)
    done = subprocess.run([python, __file__, "--engine", engine, "--model", model, "--job", str(job_file),
                           "--result", str(result_file), "--rounds", str(rounds)])
    if done.returncode != 0:
        print(f"  {engine} failed: exit status {done.returncode}", flush=True)
        return None
    result = json.loads(result_file.read_text())
    result.update(engine=engine, load=os.getloadavg()[0])
    print(f"  {engine:9s} {result['dtype']:9s} batch {result['batch_s']:6.2f} s  single query "
          f"{result['single_ms']:7.1f} ms  peak RSS {result['peak_rss_gb']:.2f} GB  (load {result['load']:.2f})",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    if args.engine:
        child(args)
        return
    if not (VENV / "bin" / "python").is_file():
        sys.exit(f"{VENV} is missing: run python bench/vs_infinity.py --setup first")
    import numpy as np

    job = make_job(args.texts)
    job_file = CACHE / "infinity_job.json"
    job_file.write_text(json.dumps(job))
    print(f"{len(job['texts'])} docstrings (<= 500 tokens), 0.6B random checkpoint, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {"q3embed": [], "infinity": []}
    for _ in range(args.passes):
        for engine in runs:
            result = run_child(engine, job_file, job["model"], args.rounds)
            if result is not None:
                runs[engine].append(result)
    if not runs["q3embed"] or not runs["infinity"]:
        sys.exit("no comparison: an engine failed")
    tokens = runs["q3embed"][-1]["tokens"]  # the same texts, so the same tokens for both (q3embed's count)
    rate = {e: statistics.median(tokens / r["batch_s"] for r in rs) for e, rs in runs.items()}
    single = {e: statistics.median(r["single_ms"] for r in rs) for e, rs in runs.items()}
    rss = {e: max(r["peak_rss_gb"] for r in rs) for e, rs in runs.items()}
    ours, theirs = np.asarray(runs["q3embed"][-1]["vectors"]), np.asarray(runs["infinity"][-1]["vectors"])
    cosine = float((ours * theirs).sum(axis=1).min())
    print("\nengine    tokens/s (median)  single query (median)  peak RSS")
    for engine in runs:
        print(f"{engine:9s} {rate[engine]:17.1f}  {single[engine]:18.1f} ms  {rss[engine]:6.2f} GB")
    print(f"q3embed / Infinity: {rate['q3embed'] / rate['infinity']:.2f}x tokens/s, "
          f"{single['infinity'] / single['q3embed']:.2f}x faster single query; "
          f"{tokens} tokens (Infinity's own usage figure, {runs['infinity'][-1]['tokens']}, counts characters: "
          f"its lengths_via_tokenize is off by default); "
          f"min cosine Infinity vs q3embed {cosine:.5f}")


if __name__ == "__main__":
    main()
