"""Embedding throughput: q3embed against sentence-transformers, same texts, same process.

    python bench/embedding.py [--shape 0.6B] [--texts 256] [--max-length 512]

Builds the full-size random checkpoint when missing (speed does not depend on weight values).
Prints tokens/s, docs/s and peak RSS for each engine, the ratios, the engine's default elementwise
kernels and attention (q3embed's CPU kernels where they run, else compiled ones and SDPA) against
eager torch (its ops one by one, one SDPA call per sequence) on one model, the cosine between our
bf16 and fp32 vectors, and the share of the measured matrix-product limit.
"""

from __future__ import annotations

import argparse
import gc
import warnings

import numpy as np
import torch

from common import checkpoint, matmul_tflops, peak_rss_gb, reset_peak_rss, stdlib_docstrings, timed
from q3embed import Embedder
from q3embed.engine.device import cpu_has_fast_bf16
from q3embed.model.kernels import EAGER

FLOPS_PER_TOKEN = {"0.6B": 2 * 0.44e9}  # 2 x non-embedding parameters (attention is small at these lengths)


def run_ours(model_dir, texts, dtype, max_length, compile="on"):
    reset_peak_rss()
    embedder = Embedder(str(model_dir), dtype=dtype, device="cpu", max_length=max_length, compile=compile)
    tokens = sum(len(ids) for ids in embedder.tokenize(texts))
    _, warm_up = timed(embedder.encode, texts[:8])  # compiles the fused kernels when compile is on
    print(f"q3embed {dtype}, compile {compile}: warm-up (first 8 texts) {warm_up:.1f} s", flush=True)
    vectors, seconds = timed(embedder.encode, texts)
    rss = peak_rss_gb()
    del embedder
    gc.collect()
    return vectors, tokens, seconds, rss


def compare_kernels(model_dir, texts, max_length, rounds=3):
    """Median tokens/s of the model with the engine's default kernels (compile on) and with eager
    torch (compile off, SDPA, the eager functions even where q3embed's CPU kernels run), alternating
    round by round: a shared machine drifts by 10-20% between runs minutes apart, more than the
    gain. The two Embedders share the memory-mapped weights' page cache."""
    embedders = {name: Embedder(str(model_dir), dtype="auto", device="cpu", max_length=max_length, compile=mode,
                                attention=attention)
                 for name, mode, attention in (("engine", "on", "auto"), ("eager", "off", "sdpa"))}
    embedders["eager"]._backend.model.use_kernels(EAGER)  # noqa: SLF001  (a benchmark may look inside)
    tokens = sum(len(ids) for ids in embedders["eager"].tokenize(texts))
    embedders["engine"].warm_up()
    rates: dict[str, list[float]] = {"engine": [], "eager": []}
    vectors = {}
    for _ in range(rounds):
        for name, embedder in embedders.items():
            vectors[name], seconds = timed(embedder.encode, texts)
            rates[name].append(tokens / seconds)
    cosine = float((vectors["engine"] * vectors["eager"]).sum(axis=1).min())
    del embedders
    gc.collect()
    return float(np.median(rates["engine"])), float(np.median(rates["eager"])), cosine


def run_sentence_transformers(model_dir, texts, max_length):
    from sentence_transformers import SentenceTransformer

    reset_peak_rss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SentenceTransformer(str(model_dir), device="cpu",
                                    model_kwargs={"dtype": "auto"}, tokenizer_kwargs={"padding_side": "left"})
    model.max_seq_length = max_length
    model.encode(texts[:8])
    vectors, seconds = timed(model.encode, texts, batch_size=32, normalize_embeddings=True)
    rss = peak_rss_gb()
    dtype = next(model.parameters()).dtype
    del model
    gc.collect()
    return vectors, seconds, rss, dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model_dir = checkpoint("embedding", args.shape)
    texts = stdlib_docstrings(args.texts)
    fast_bf16 = cpu_has_fast_bf16()
    print(f"threads {torch.get_num_threads()}, CPU bf16 native: {fast_bf16}, texts {len(texts)}")

    ours_auto, tokens, seconds, rss = run_ours(model_dir, texts, "auto", args.max_length)
    auto_dtype = "bfloat16" if fast_bf16 else "float32"
    other_dtype = "float32" if fast_bf16 else "bfloat16"
    ours_other, _, other_seconds, _ = run_ours(model_dir, texts, other_dtype, args.max_length)
    engine_rate, eager_rate, engine_vs_eager = compare_kernels(model_dir, texts, args.max_length)
    st_vectors, st_seconds, st_rss, st_dtype = run_sentence_transformers(model_dir, texts, args.max_length)

    limit = matmul_tflops(torch.bfloat16 if fast_bf16 else torch.float32) * 1e12 / FLOPS_PER_TOKEN[args.shape]
    cosine_bf16_fp32 = float((ours_auto * ours_other).sum(axis=1).min())
    cosine_vs_st = float((ours_auto * st_vectors).sum(axis=1).min())
    print(f"tokens {tokens} (mean {tokens / len(texts):.0f} per text)")
    rows = [
        (f"q3embed {auto_dtype} (auto)", seconds, rss),
        (f"q3embed {other_dtype}", other_seconds, float("nan")),
        (f"sentence-transformers ({str(st_dtype).removeprefix('torch.')}, batch 32)", st_seconds, st_rss),
    ]
    for name, secs, peak in rows:
        print(f"{name:48s} {tokens / secs:8.0f} tokens/s {len(texts) / secs:7.1f} docs/s  peak RSS {peak:.2f} GB")
    print(f"ratio q3embed auto / sentence-transformers: {st_seconds / seconds:.2f}x")
    print(f"the engine's kernels / eager torch, interleaved rounds on one model: {engine_rate:.0f} / "
          f"{eager_rate:.0f} tokens/s = {engine_rate / eager_rate:.2f}x (min cosine {engine_vs_eager:.6f})")
    print(f"share of the matrix-product limit ({limit:.0f} tokens/s): {tokens / seconds / limit:.0%} "
          f"(the engine's median of the interleaved rounds: {engine_rate / limit:.0%})")
    print(f"min cosine bf16 vs fp32: {cosine_bf16_fp32:.5f}; "
          f"min cosine q3embed vs sentence-transformers: {cosine_vs_st:.5f}")
    assert np.isfinite(ours_auto).all()


if __name__ == "__main__":
    main()
