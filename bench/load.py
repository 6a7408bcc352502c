"""Server load: N concurrent clients on loopback against `q3embed serve`, compared with the offline engine.

    python bench/load.py [--shape 0.6B] [--clients 16] [--seconds 60] [--texts-per-request 4]
                         [--dtype auto] [--quantize none|int8]

1. Offline: the engine (Embedder.encode) on the request texts in this process -> tokens/s.
2. Starts `q3embed serve` on 127.0.0.1 (a separate process, so the load generator does not share
   its interpreter), then:
   - idle latency: one short text at a time, p50/p99, as a query (in the default instruction, 27
     tokens) and as a document (8 tokens), and the issue's 13-token query text as a document;
   - load: N clients, each sending requests back to back for a bounded time; prints requests/s,
     tokens/s, p50/p99 latency, and the ratio to the offline throughput.
Every request targets loopback only; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

from common import checkpoint, stdlib_docstrings, timed
from q3embed import Embedder

SHORT_QUERY = "What is the capital of China?"  # 8 tokens as a document, 27 in the default instruction
LONGER_QUERY = "How do I reset the password of my work email account?"  # 13 tokens as a document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_tokens_per_second(model_dir, texts: list[str], dtype: str, max_length: int, quantize: str) -> float:
    embedder = Embedder(str(model_dir), dtype=dtype, device="cpu", max_length=max_length, quantize=quantize)
    tokens = sum(len(ids) for ids in embedder.tokenize(texts))
    embedder.encode(texts[:8])  # warm-up
    _, seconds = timed(embedder.encode, texts)
    return tokens / seconds


def start_server(model_dir, port: int, dtype: str, max_length: int, *flags: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("Q3EMBED_")}
    command = [sys.executable, "-m", "q3embed", "serve", "--model", str(model_dir), "--no-reranker",
               "--port", str(port), "--dtype", dtype, "--max-length", str(max_length), "--log-level", "warning",
               *flags]
    return subprocess.Popen(command, env=env)


async def wait_healthy(client: httpx.AsyncClient, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("the server did not start")


async def idle_latency(client: httpx.AsyncClient, repeats: int, input_type: str = "query",
                       text: str = SHORT_QUERY) -> list[float]:
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"input": text, "input_type": input_type})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


async def one_client(client: httpx.AsyncClient, requests: list[list[str]], stop_at: float,
                     latencies: list[float]) -> int:
    tokens, turn = 0, 0
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"input": requests[turn % len(requests)]})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
        tokens += response.json()["usage"]["total_tokens"]
        turn += 1
    return tokens


async def load(client: httpx.AsyncClient, clients: int, requests: list[list[str]], seconds: float):
    latencies: list[float] = []
    started = time.monotonic()
    stop_at = started + seconds
    # Each client starts at a different request so that the mix stays the same throughout.
    totals = await asyncio.gather(*(one_client(client, requests[c:] + requests[:c], stop_at, latencies)
                                    for c in range(clients)))
    elapsed = time.monotonic() - started  # includes the last requests that ran past the bound
    return sum(totals), elapsed, latencies


def percentiles(values: list[float]) -> str:
    ms = np.array(values) * 1000
    return f"p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms ({len(ms)} requests)"


async def drive(args, url: str, process: subprocess.Popen, requests: list[list[str]]):
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await wait_healthy(client, process)
        await idle_latency(client, 3)  # warm-up
        idle = await idle_latency(client, args.idle_requests)
        idle_document = await idle_latency(client, args.idle_requests, "document")
        idle_13 = await idle_latency(client, args.idle_requests, "document", LONGER_QUERY)
        tokens, elapsed, latencies = await load(client, args.clients, requests, args.seconds)
    return (idle, idle_document, idle_13), tokens, elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--texts-per-request", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32, help="distinct request bodies the clients cycle through")
    parser.add_argument("--idle-requests", type=int, default=20)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--quantize", default="none", choices=("none", "int8"))
    args = parser.parse_args()

    model_dir = checkpoint("embedding", args.shape)
    texts = stdlib_docstrings(args.requests * args.texts_per_request)
    requests = [texts[i:i + args.texts_per_request] for i in range(0, len(texts), args.texts_per_request)]
    offline = offline_tokens_per_second(model_dir, texts, args.dtype, args.max_length, args.quantize)
    print(f"offline engine: {offline:.0f} tokens/s on {len(texts)} texts")

    port = free_port()
    process = start_server(model_dir, port, args.dtype, args.max_length, "--quantize", args.quantize)
    try:
        url = f"http://127.0.0.1:{port}"
        (idle, idle_document, idle_13), tokens, elapsed, latencies = asyncio.run(drive(args, url, process, requests))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    served = tokens / elapsed
    print(f"idle, one short query (default instruction): {percentiles(idle)}")
    print(f"idle, the same text as a document: {percentiles(idle_document)}")
    print(f"idle, a 13-token text as a document: {percentiles(idle_13)}")
    print(f"{args.clients} clients x {args.texts_per_request} texts/request for {elapsed:.0f} s: "
          f"{len(latencies) / elapsed:.2f} requests/s, {served:.0f} tokens/s, {percentiles(latencies)}")
    print(f"served / offline throughput: {served / offline:.2f}")


if __name__ == "__main__":
    main()
