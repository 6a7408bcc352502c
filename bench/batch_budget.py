"""Tokens per packed batch (max_batch_tokens): throughput and peak memory for several budgets.

    python bench/batch_budget.py [--shape 0.6B] [--texts 128] [--budgets 1024 2048 4096 8192 16384]

Same model, same texts, one process; each budget embeds all texts once after a warm-up. Also
prints how long tokenization takes compared with the model, which is what overlapping the two
could win at most.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from common import checkpoint, peak_rss_gb, reset_peak_rss, stdlib_docstrings, timed
from q3embed import Embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    args = parser.parse_args()
    texts = stdlib_docstrings(args.texts)
    embedder = Embedder(str(checkpoint("embedding", args.shape)), dtype=args.dtype, device="cpu",
                        max_length=args.max_length)
    started = time.perf_counter()
    token_lists = embedder.tokenize(texts)
    tokenize_s = time.perf_counter() - started
    tokens = sum(len(t) for t in token_lists)
    print(f"{len(texts)} texts, {tokens} tokens, dtype {embedder.info.dtype}; tokenization {tokenize_s * 1e3:.1f} ms")
    embedder.encode(texts[:8])  # warm-up
    for budget in args.budgets:
        embedder = Embedder(replace(embedder.options, max_batch_tokens=budget))  # the weights stay memory-mapped
        embedder.encode(texts[:8])  # warm-up
        reset_peak_rss()
        _, seconds = timed(embedder.run, token_lists)
        print(f"max_batch_tokens {budget:6d}: {tokens / seconds:7.1f} tokens/s, peak RSS {peak_rss_gb():.2f} GB, "
              f"tokenization = {tokenize_s / seconds:.2%} of model time")


if __name__ == "__main__":
    main()
