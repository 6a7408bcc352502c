"""One interactive query, in-process: its latency against the hardware bound measured in the same run.

    cd bench && python single_query.py [--shape 0.6B] [--rounds 30] [--dtype auto] [--compile auto|max]
                                       [--quantize int8] [--gguf Q8_0]

The bound of one forward pass is the larger of (a) streaming the decoder's weights from memory
once (their bytes over the read bandwidth measured here by summing a buffer of the same size) and
(b) computing its tokens at the measured matrix-product rate of the engine's dtype (2 x parameters
x tokens; the fastest kernel's best product at 2,048 rows, bench/common.py). dtype auto is the
engine's own choice: bf16 where the CPU multiplies it natively, fp32 elsewhere (on AVX2 alone bf16
is emulated and several times slower).
Prints the median and p90 of `Embedder.encode` for an 8-token and a 13-token document and the
8-token text as a query in the default instruction (27 tokens), each bound, the ratio, and the
load average.
With --quantize int8 the bound is the same rule for int8 weights (one byte each, the int8
matrix-product rate measured here), and the cosine of its vectors against fp32 is printed
beside that of the exact model in the same dtype, on 32 standard-library docstrings. Where int8
means Q8_0 blocks times Q8_0 inputs (model/block_linear.py: bf16 on AVX512-BF16 and VNNI) the
weights stream at their own bytes (1.125 a weight with the fp32 scales), and the int8 rate is the
faster of that kernel's and fbgemm's, each at its batch sizes.
--gguf Q8_0 runs the checkpoint's Q8_0 GGUF file (bench/common's writer) instead, its cosine
against the fp32 safetensors model printed the same way: its blocks times bf16 inputs (the file's
values, the default), or with --quantize int8 times Q8_0 inputs, as llama.cpp computes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import checkpoint, matmul_tflops, stdlib_docstrings
from gguf_vs_safetensors import gguf_file

from q3embed import Embedder
from q3embed.engine.memory import huge_page_buffer
from q3embed.model.block_linear import Q8Linear, cpu_kernels_available
from q3embed.model.quantized import Int8Linear

TEXT = "What is the capital of China?"  # 8 tokens as a document, 27 in the default instruction
LONGER_TEXT = "How do I reset the password of my work email account?"  # 13 tokens: the query length


def read_bandwidth_gbs(nbytes: int, repeats: int = 5) -> float:
    """GB/s of reading `nbytes` once: the fastest of summing an fp32 and a bf16 buffer of that size
    (one pass, next to no arithmetic; the fp32 sum vectorises better, so it is the tighter bound),
    each on 4 KB pages and on 2 MB ones (where the engine keeps the weights, engine/memory.py)."""
    best_rate = 0.0
    for dtype in (torch.float32, torch.bfloat16):
        count = nbytes // torch.tensor([], dtype=dtype).element_size()
        for pages in ("4 KB", "2 MB"):
            buffer = torch.ones(count, dtype=dtype) if pages == "4 KB" else _huge_page_ones(count, dtype)
            if buffer is None:
                continue
            buffer.sum()
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                buffer.sum()
                best = min(best, time.perf_counter() - started)
            best_rate = max(best_rate, nbytes / best / 1e9)
            del buffer
    return best_rate


def _huge_page_ones(count: int, dtype: torch.dtype) -> torch.Tensor | None:
    buffer = huge_page_buffer(count * torch.tensor([], dtype=dtype).element_size())
    return None if buffer is None else buffer.view(dtype).fill_(1)


def gemv_rate_gbs(embedder: Embedder, rows: int, repeats: int = 3) -> float:
    """GB/s at which the engine's own linear layers stream the decoder's weights for `rows` rows:
    what its kernels reach on this machine, beside what memory allows."""
    model = embedder._backend.model  # noqa: SLF001
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Q8Linear))]
    dtype = getattr(torch, embedder.info.dtype)
    x = {layer.in_features: torch.randn(rows, layer.in_features, dtype=dtype) for layer in layers}
    with torch.inference_mode():
        for layer in layers:
            layer(x[layer.in_features])
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for layer in layers:
                layer(x[layer.in_features])
            best = min(best, time.perf_counter() - started)
    return sum(_weight_bytes(layer) for layer in layers) / best / 1e9


def _weight_bytes(layer: torch.nn.Module) -> int:
    if isinstance(layer, Q8Linear):
        return layer.values.numel() + layer.scales.numel() * layer.scales.element_size()
    return layer.weight.numel() * layer.weight.element_size()


def decoder_weights(embedder: Embedder) -> tuple[int, int]:
    """(bytes, parameters) that one forward pass reads: every layer, not the embedding table
    (an int8 layer's weights are one byte each, packed outside its parameters; Q8_0 blocks their
    values and scales, buffers of their own)."""
    model = embedder._backend.model  # noqa: SLF001  (a benchmark may look inside)
    params = [p for name, p in model.named_parameters() if not name.startswith("embed_tokens")]
    int8 = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, Int8Linear))
    blocks = [m for m in model.modules() if isinstance(m, Q8Linear)]
    nbytes = sum(p.numel() * p.element_size() for p in params) + int8 + sum(_weight_bytes(m) for m in blocks)
    return nbytes, sum(p.numel() for p in params) + int8 + sum(m.in_features * m.out_features for m in blocks)


def int8_tops(m: int = 2048, k: int = 1024, n: int = 3072, repeats: int = 10) -> float:
    """The measured int8 matrix-product rate at the model's shapes: the faster of fbgemm's dynamic
    int8 linear and, where q3embed's kernels run, its Q8_0 x Q8_0 kernel (what quantize=int8 runs
    there; timed at 256 rows, its batch regime)."""
    fbgemm = Int8Linear(torch.nn.Linear(k, n, bias=False))
    rates = [_tops(fbgemm, torch.randn(m, k), repeats)]
    if cpu_kernels_available():
        q8 = Q8Linear.quantized(torch.nn.Linear(k, n, bias=False), int8_inputs=True)
        rates.append(_tops(q8, torch.randn(256, k).bfloat16(), repeats))
    return max(rates)


def _tops(layer: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """TOP/s of `layer` on x [m, k], best of three runs of `repeats` calls."""
    with torch.inference_mode():
        layer(x)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(repeats):
                layer(x)
            best = min(best, time.perf_counter() - started)
    return 2 * x.shape[0] * layer.in_features * layer.out_features * repeats / best / 1e12


def cosines_against_fp32(model_dir: str, embedder: Embedder) -> None:
    """Against the fp32 safetensors model: this run's vectors and the exact model's in its dtype."""
    texts = stdlib_docstrings(32)
    reference = Embedder(model_dir, dtype="float32", device="cpu", compile="off", max_length=512).encode(texts)
    exact = Embedder(model_dir, dtype=embedder.info.dtype, device="cpu", compile="off", max_length=512).encode(texts)
    embedder_vectors = embedder.encode(texts)
    labelled = ((f"exact {embedder.info.dtype}", exact), (f"this run ({embedder.info.quantize})", embedder_vectors))
    for label, vectors in labelled:
        cosines = (vectors * reference).sum(axis=1)
        print(f"cosine against fp32 on {len(texts)} docstrings, {label}: min {cosines.min():.6f}, "
              f"mean {cosines.mean():.6f}")


def latencies_ms(embedder: Embedder, text: str, rounds: int, **kwargs) -> list[float]:
    for _ in range(3):
        embedder.encode([text], **kwargs)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        embedder.encode([text], **kwargs)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dtype", default="auto", help="auto (the engine's choice), bfloat16 or float32")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off", "max"))
    parser.add_argument("--quantize", default="none", choices=("none", "int8"))
    parser.add_argument("--gguf", choices=("Q8_0",), help="run the checkpoint's GGUF file of this type")
    args = parser.parse_args()

    model_dir = str(checkpoint("embedding", args.shape))
    model = str(gguf_file(checkpoint("embedding", args.shape), args.gguf)) if args.gguf else model_dir
    embedder = Embedder(model, dtype=args.dtype, device="cpu", compile=args.compile, quantize=args.quantize,
                        max_length=512)
    started = time.perf_counter()
    embedder.warm_up()  # what a server does at start-up: compile now (max: every short-sequence bucket)
    print(f"warm-up (compile {args.compile}) {time.perf_counter() - started:.1f} s")
    nbytes, params = decoder_weights(embedder)
    bandwidth = read_bandwidth_gbs(nbytes)
    modules = list(embedder._backend.model.modules())  # noqa: SLF001
    blocks = any(isinstance(m, Q8Linear) for m in modules)  # Q8_0 blocks
    # int8 products: fbgemm's, or Q8_0 blocks times Q8_0 inputs
    int8 = any(isinstance(m, Int8Linear) or (isinstance(m, Q8Linear) and m.int8_inputs) for m in modules)
    rate = (int8_tops() if int8 else matmul_tflops(getattr(torch, embedder.info.dtype))) * 1e12
    stream_ms = nbytes / (bandwidth * 1e9) * 1e3
    print(f"load average {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; compile {args.compile}; "
          f"dtype {embedder.info.dtype}; quantize {args.quantize}; model {Path(model).name}"
          f"{' (Q8_0 blocks)' if blocks else ''}")
    print(f"decoder weights {nbytes / 1e9:.2f} GB; read {bandwidth:.1f} GB/s -> {stream_ms:.1f} ms; "
          f"{'int8' if int8 else embedder.info.dtype} matrix products {rate / 1e12:.2f} T(FL)OP/s")
    kind = "Q8_0 x Q8_0 inputs" if int8 else "Q8_0 x bf16 inputs" if blocks else embedder.info.dtype
    if not any(isinstance(m, Int8Linear) for m in modules):  # fbgemm's layers are not timed alone
        for rows in (1, 8, 27):
            rate_gbs = gemv_rate_gbs(embedder, rows)
            print(f"the engine's linear layers over those weights ({kind}), {rows:>2} rows: {rate_gbs:.1f} GB/s")
    cases = (("document", TEXT, {}), ("document", LONGER_TEXT, {}), ("query", TEXT, {"query": True}))
    for label, text, kwargs in cases:
        tokens = len(embedder.tokenize([text], **kwargs)[0])
        compute_ms = 2 * params * tokens / rate * 1e3
        bound = max(stream_ms, compute_ms)
        times = sorted(latencies_ms(embedder, text, args.rounds, **kwargs))
        median, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
        print(f"{label:<9}{tokens:>3} tokens: median {median:6.1f} ms, p90 {p90:6.1f} ms; bound {bound:5.1f} ms "
              f"(stream {stream_ms:.1f}, compute {compute_ms:.1f}); median / bound {median / bound:.2f}x")
    if int8 or blocks or args.gguf:
        cosines_against_fp32(model_dir, embedder)


if __name__ == "__main__":
    main()
