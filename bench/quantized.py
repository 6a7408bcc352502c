"""quantize=int8 and Q8_0 files against the exact model: speed, resident memory and cosine.

    cd bench && python quantized.py [--texts 48] [--rounds 2] [--passes 2]

The full-size random 0.6B checkpoint (bf16 safetensors) and its Q8_0 GGUF (bench/common's writer,
as llama.cpp's converter lays it out), in the dtype the engine picks for this CPU (bf16 where it
multiplies bf16 natively, else fp32) beside the fp32 reference. Each configuration runs in a fresh
child process: resident memory after loading and after the run (VmRSS; the second against the
file's size), batch tokens/s over standard-library docstrings (max_length 512), single-query
latency (the 27-token default-instruction query, median of 20) and the vectors, whose cosine
against the fp32 safetensors model is printed. --passes repeats the whole sequence, so that the
configurations interleave on a noisy machine.

A Q8_0 file in bf16 runs on its own blocks where the Q8_0 kernel runs (model/block_linear.py); the
rows with quantize "dequantize" load the same file expanded to bf16, as a CPU without the kernel
does (the bf16 products then run on whichever kernel the engine prefers here).
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

from common import CACHE, checkpoint, stdlib_docstrings
from gguf_vs_safetensors import gguf_file

QUERY = "What is the capital of China?"


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


DEQUANTIZED = "dequantize"  # a "quantize" value of this script only: the file expanded to bf16


def child(model: str, dtype: str, quantize: str, texts: list[str], rounds: int) -> dict:
    from q3embed import Embedder

    if quantize == DEQUANTIZED:  # as on a CPU without the Q8_0 kernel
        import q3embed.weights.gguf

        q3embed.weights.gguf.cpu_kernels_run = lambda dtype, device: False
        quantize = "none"
    embedder = Embedder(model, dtype=dtype, device="cpu", quantize=quantize, max_length=512)
    resident = rss_gb()
    embedder.warm_up()
    tokens = sum(len(ids) for ids in embedder.tokenize(texts))
    embedder.encode(texts[:4])
    batch = []
    for _ in range(rounds):
        start = time.perf_counter()
        vectors = embedder.encode(texts)
        batch.append(time.perf_counter() - start)
    single = []
    for _ in range(20):
        start = time.perf_counter()
        embedder.encode_queries([QUERY])
        single.append(time.perf_counter() - start)
    return {"rss_after_load_gb": resident, "rss_after_run_gb": rss_gb(),
            "tokens_per_s": tokens / statistics.median(batch),
            "single_ms": 1000 * statistics.median(single), "vectors": vectors.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # model dtype quantize result-file
    args = parser.parse_args()
    texts_file = CACHE / "quantized_texts.json"
    if args.child:
        model, dtype, quantize, result = args.child
        out = child(model, dtype, quantize, json.loads(texts_file.read_text()), args.rounds)
        Path(result).write_text(json.dumps(out))
        return
    import numpy as np
    import torch

    from q3embed.engine.device import dtype_name, resolve_dtype

    model_dir = checkpoint("embedding", "0.6B")
    q8 = gguf_file(model_dir, "Q8_0")
    texts_file.write_text(json.dumps(stdlib_docstrings(args.texts)))
    safetensors_bytes = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    dtype = dtype_name(resolve_dtype("auto", torch.device("cpu")))  # the engine's choice for this CPU
    configs = [("safetensors", str(model_dir), "float32", "none", safetensors_bytes)]
    if dtype != "float32":
        configs.append(("safetensors", str(model_dir), dtype, "none", safetensors_bytes))
    configs += [("safetensors", str(model_dir), dtype, "int8", safetensors_bytes),
                ("GGUF Q8_0", str(q8), dtype, "none", q8.stat().st_size),
                ("GGUF Q8_0", str(q8), dtype, DEQUANTIZED, q8.stat().st_size),
                ("GGUF Q8_0", str(q8), dtype, "int8", q8.stat().st_size)]
    results: dict[tuple, list[dict]] = {}
    result_file = CACHE / "quantized_result.json"
    for number in range(args.passes):
        for config in configs:
            if config is configs[0] and number:  # the fp32 reference, once
                continue
            label, model, dtype, quantize, _ = config
            load = os.getloadavg()[0]
            subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds), "--child", model, dtype, quantize,
                            str(result_file)], check=True)
            result = json.loads(result_file.read_text())
            result["load"] = load
            results.setdefault(config, []).append(result)
            print(f"pass {number + 1}: {label:11s} {dtype:8s} quantize {quantize:10s} {result['tokens_per_s']:7.1f} "
                  f"tokens/s, single query {result['single_ms']:6.1f} ms, RSS after load "
                  f"{result['rss_after_load_gb']:.2f} GB, after the run {result['rss_after_run_gb']:.2f} GB "
                  f"(load {load:.2f})", flush=True)
    reference = np.asarray(results[configs[0]][0]["vectors"])
    print(f"\n{len(json.loads(texts_file.read_text()))} docstrings; medians over {args.passes} passes")
    print("file         dtype     quantize  tokens/s  single ms  RSS after the run (x file)  cosine vs fp32 min / mean")
    for config, runs in results.items():
        label, _, dtype, quantize, size = config
        cosines = (np.asarray(runs[0]["vectors"]) * reference).sum(axis=1)
        rss = statistics.median(r["rss_after_run_gb"] for r in runs)
        print(f"{label:12s} {dtype:9s} {quantize:10s} {statistics.median(r['tokens_per_s'] for r in runs):9.1f} "
              f"{statistics.median(r['single_ms'] for r in runs):9.1f}  {rss:6.2f} GB ({rss * 2**30 / size:.2f}x)"
              f"               {cosines.min():.5f} / {cosines.mean():.5f}")


if __name__ == "__main__":
    main()
