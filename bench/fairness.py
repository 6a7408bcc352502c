"""Fairness: how long a short query waits while another client's long request is being embedded.

    python bench/fairness.py [--shape 0.6B] [--long-tokens 16384] [--probe-every 1.0] [--max-batch-tokens N]

Starts `q3embed serve` on 127.0.0.1 (a separate process; see load.py), measures the idle latency
of a short query, then sends one long request (texts of ~500 tokens adding up to --long-tokens)
and, while it runs, a short query every --probe-every seconds. Prints the long request's time and
the short queries' latency during it (p50, p95, max), against the idle p50 and against one
batch's time (what the scheduler promises a short query waits, about one batch). Loopback only;
bounded by the long request; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

import httpx
import numpy as np

from common import checkpoint
from load import SHORT_QUERY, free_port, idle_latency, start_server, wait_healthy

WORDS = ("retrieval embedding vector query passage document ranking model token batch latency "
         "throughput memory cache index search relevance").split()


def long_texts(tokens: int, per_text: int = 500) -> list[str]:
    """Texts of about `per_text` tokens each (one word ~ one token here), about `tokens` in all."""
    count = max(1, tokens // per_text)
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(per_text - 2)) for i in range(count)]


async def probe_while(client: httpx.AsyncClient, running: asyncio.Task, every: float) -> list[float]:
    latencies = []
    while not running.done():  # every probe sent while the long request runs counts, however long it waits
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"input": SHORT_QUERY, "input_type": "query"})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(max(0.0, every - (time.perf_counter() - started)))
    return latencies


async def measure(port: int, process, args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3600) as client:
        await wait_healthy(client, process)
        await idle_latency(client, 3)  # warm-up
        idle = await idle_latency(client, 10)
        texts = long_texts(args.long_tokens)
        started = time.perf_counter()
        running = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": texts}))
        await asyncio.sleep(0.5)  # the long request is being computed
        probes = await probe_while(client, running, args.probe_every)
        answer = await running
        answer.raise_for_status()
        long_s = time.perf_counter() - started
        tokens = answer.json()["usage"]["total_tokens"]
    batch_s = long_s / max(1.0, tokens / args.max_batch_tokens)
    print(f"long request: {len(texts)} texts, {tokens} tokens in {long_s:.1f} s ({tokens / long_s:.0f} tokens/s); "
          f"one {args.max_batch_tokens}-token batch ~ {batch_s:.1f} s")
    print(f"short query idle: p50 {np.median(idle) * 1e3:.0f} ms")
    if probes:
        p50, p95, worst = np.median(probes), np.percentile(probes, 95), max(probes)
        print(f"short query during the long request ({len(probes)} probes): p50 {p50 * 1e3:.0f} ms, "
              f"p95 {p95 * 1e3:.0f} ms, max {worst * 1e3:.0f} ms = {worst / batch_s:.2f} batches, "
              f"{p50 / np.median(idle):.1f}x idle p50")
    else:
        print("no probe overlapped the long request (it finished within 0.5 s): raise --long-tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--long-tokens", type=int, default=16384)
    parser.add_argument("--probe-every", type=float, default=1.0)
    parser.add_argument("--max-batch-tokens", type=int, default=2048,
                        help="the server's --max-batch-tokens (default 2048, its CPU default)")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    model_dir = checkpoint("embedding", args.shape)
    port = free_port()
    print(f"load average {os.getloadavg()[0]:.2f}; server {sys.executable} -m q3embed serve", flush=True)
    process = start_server(model_dir, port, args.dtype, 512, "--max-batch-tokens", str(args.max_batch_tokens))
    try:
        asyncio.run(measure(port, process, args))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


if __name__ == "__main__":
    main()
