"""GGUF Q8_0 against bf16 safetensors: load time, peak RSS and tokens/s, each in a fresh process.

    python bench/gguf_vs_safetensors.py [--shape 0.6B] [--texts 64] [--max-length 512] [--file-type Q8_0]

Builds the full-size random checkpoint (bf16 safetensors, as released) when missing, and from it a
GGUF with the `gguf` package's writer and quantizer, the way llama.cpp's converter writes it (both
cached under bench/.cache/). Each (format, engine dtype) runs in its own child process, so load time
and peak RSS are not blurred by what an earlier run left mapped or allocated. The GGUF path
dequantizes into the engine's dtype at load: compute is the same packed decoder in both cases.
(Not named gguf.py: run from bench/, that name would shadow the `gguf` package.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CACHE, checkpoint, peak_rss_gb, reset_peak_rss, stdlib_docstrings

RUNS = [("safetensors", "float32"), ("safetensors", "bfloat16"), ("gguf", "float32"), ("gguf", "bfloat16")]


def gguf_file(model_dir: Path, file_type: str) -> Path:
    """The GGUF twin of `model_dir`, written once and kept."""
    out = CACHE / f"{model_dir.name}-{file_type}.gguf"
    if not out.is_file():
        from q3embed.testing.gguf_writer import write_gguf

        print(f"writing {out} ...", flush=True)
        partial = out.with_suffix(".partial")
        write_gguf(model_dir, partial, file_type=file_type)
        partial.rename(out)  # never leave a truncated file behind under the final name
    return out


def run_one(model: str, dtype: str, texts_file: Path, max_length: int, vectors_out: Path) -> dict:
    """In the child: load, warm up, encode; report the figures as one JSON line."""
    import torch

    from q3embed import Embedder

    texts = json.loads(texts_file.read_text())
    reset_peak_rss()
    start = time.perf_counter()
    embedder = Embedder(model, dtype=dtype, device="cpu", max_length=max_length)
    load_s = time.perf_counter() - start
    load_rss = peak_rss_gb()
    tokens = sum(len(ids) for ids in embedder.tokenize(texts))
    embedder.encode(texts[:4])  # warm-up
    start = time.perf_counter()
    vectors = embedder.encode(texts)
    seconds = time.perf_counter() - start
    np.save(vectors_out, vectors)
    return {"load_s": load_s, "load_rss_gb": load_rss, "peak_rss_gb": peak_rss_gb(), "tokens": tokens,
            "seconds": seconds, "threads": torch.get_num_threads()}


def child(args: argparse.Namespace) -> None:
    print(json.dumps(run_one(args.model, args.dtype, Path(args.texts_file), args.max_length, Path(args.vectors))))


def parent(args: argparse.Namespace) -> None:
    model_dir = checkpoint("embedding", args.shape)
    files = {"safetensors": model_dir, "gguf": gguf_file(model_dir, args.file_type)}
    size_gb = {"safetensors": sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 1e9,
               "gguf": files["gguf"].stat().st_size / 1e9}
    texts = stdlib_docstrings(args.texts)
    work = Path(tempfile.mkdtemp(prefix="q3embed-gguf-bench-"))
    (work / "texts.json").write_text(json.dumps(texts))
    results, vectors = {}, {}
    for fmt, dtype in RUNS:
        out = work / f"{fmt}-{dtype}.npy"
        command = [sys.executable, __file__, "--child", "--model", str(files[fmt]), "--dtype", dtype,
                   "--texts-file", str(work / "texts.json"), "--max-length", str(args.max_length),
                   "--vectors", str(out)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[(fmt, dtype)] = json.loads(done.stdout.strip().splitlines()[-1])
        vectors[(fmt, dtype)] = np.load(out)
        print(f"done {fmt} {dtype}", flush=True)
    report(args, results, vectors, size_gb)


def report(args: argparse.Namespace, results: dict, vectors: dict, size_gb: dict) -> None:
    first = next(iter(results.values()))
    print(f"threads {first['threads']}, texts {args.texts}, tokens {first['tokens']} "
          f"(mean {first['tokens'] / args.texts:.0f} per text), max length {args.max_length}")
    print(f"file size: safetensors bf16 {size_gb['safetensors']:.2f} GB, "
          f"GGUF {args.file_type} {size_gb['gguf']:.2f} GB")
    reference = vectors[("safetensors", "float32")]
    print(f"{'format':24s} {'engine dtype':12s} {'load s':>7s} {'RSS after load':>15s} {'peak RSS':>9s} "
          f"{'tokens/s':>9s} {'min cos':>8s}")
    for (fmt, dtype), r in results.items():
        name = "safetensors bf16" if fmt == "safetensors" else f"GGUF {args.file_type}"
        cosine = float((vectors[(fmt, dtype)] * reference).sum(axis=1).min())
        print(f"{name:24s} {dtype:12s} {r['load_s']:7.1f} {r['load_rss_gb']:12.2f} GB {r['peak_rss_gb']:6.2f} GB "
              f"{r['tokens'] / r['seconds']:9.0f} {cosine:8.5f}")
    print("min cos: against safetensors in float32, the engine's reference here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--file-type", default="Q8_0", choices=["Q8_0", "F16", "BF16"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
