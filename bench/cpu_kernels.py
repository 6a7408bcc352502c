"""q3embed's bf16 kernel against oneDNN's, whole model, one process, rounds interleaved.

    cd bench && python cpu_kernels.py [--rounds 4] [--texts 64]

Two Embedders of the full-size random 0.6B checkpoint in bf16 (compile auto, warmed up): one with
its linear layers packed for q3embed's kernel (model/block_linear.py; what the engine does where it
prefers its kernels: AVX512-BF16 without AMX), one packed for oneDNN (what it does elsewhere).
Each round runs, for each model in turn: a batch of standard-library docstrings (tokens/s), the
issue's 13-token text as a document and the 8-token text as a default-instruction query (27
tokens), each the median of 8. Prints the medians over rounds, each model's ratio, the load
average before and after, and the cosine between the two models' vectors (the same products summed
in another order). Needs a CPU where the kernels run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import checkpoint, stdlib_docstrings

import q3embed.model.linear as linear
from q3embed import Embedder
from q3embed.model.block_linear import cpu_kernels_available

DOCUMENT = "How do I reset the password of my work email account?"  # 13 tokens
QUERY = "What is the capital of China?"  # 27 tokens in the default instruction


def load(model: str, kernel: bool) -> Embedder:
    runs = linear.cpu_kernels_run
    linear.cpu_kernels_run = lambda dtype, device: kernel  # a benchmark may choose the packing (bf16, CPU)
    try:
        embedder = Embedder(model, device="cpu", dtype="bfloat16", max_length=512)
    finally:
        linear.cpu_kernels_run = runs
    embedder.warm_up()
    layers = [m for m in embedder._backend.model.modules() if isinstance(m, linear.Linear)]  # noqa: SLF001
    assert all(layer.tiled == kernel for layer in layers), "the packing was not the one asked for"
    return embedder


def median_ms(embedder: Embedder, text: str, **kwargs: bool) -> float:
    times = []
    for _ in range(8):
        started = time.perf_counter()
        embedder.encode([text], **kwargs)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--texts", type=int, default=64)
    args = parser.parse_args()
    if not cpu_kernels_available():
        raise SystemExit("q3embed's CPU kernels do not run here (AVX512-BF16 and a C++ compiler needed)")
    model = str(checkpoint("embedding", "0.6B"))
    engines = {"q3embed kernel": load(model, True), "oneDNN": load(model, False)}
    texts = stdlib_docstrings(args.texts)
    tokens = sum(len(ids) for ids in engines["oneDNN"].tokenize(texts))
    for embedder in engines.values():
        embedder.encode(texts[:8])
    results: dict[str, dict[str, list[float]]] = {name: {"batch": [], "13": [], "27": []} for name in engines}
    print(f"{len(texts)} docstrings, {tokens} tokens; load average {os.getloadavg()[0]:.2f}", flush=True)
    for _ in range(args.rounds):
        for name, embedder in engines.items():
            started = time.perf_counter()
            embedder.encode(texts)
            results[name]["batch"].append(tokens / (time.perf_counter() - started))
            results[name]["13"].append(median_ms(embedder, DOCUMENT))
            results[name]["27"].append(median_ms(embedder, QUERY, query=True))
    medians = {name: {key: statistics.median(values) for key, values in runs.items()} for name, runs in results.items()}
    for name, figures in medians.items():
        print(f"{name:15s} batch {figures['batch']:7.1f} tokens/s, 13 tokens {figures['13']:6.1f} ms, "
              f"27 tokens {figures['27']:6.1f} ms")
    ours, theirs = medians["q3embed kernel"], medians["oneDNN"]
    print(f"kernel / oneDNN: batch {ours['batch'] / theirs['batch']:.2f}x tokens/s, 13 tokens "
          f"{theirs['13'] / ours['13']:.2f}x faster, 27 tokens {theirs['27'] / ours['27']:.2f}x faster")
    vectors = [embedder.encode(texts[:16]) for embedder in engines.values()]
    print(f"min cosine between the two: {(vectors[0] * vectors[1]).sum(axis=1).min():.6f}; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
