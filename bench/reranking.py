"""Reranking throughput: q3embed (two-row head, shared-prefix reuse) against the transformers
reference computation of the Qwen3-Reranker model card, one query x N documents, same process.

    python bench/reranking.py [--shape 0.6B] [--docs 64] [--max-length 512]

Builds the full-size random reranker checkpoint when missing. Prints pairs/s for q3embed with and
without prefix reuse and for the reference (AutoModelForCausalLM, left padding, batches of 8,
full-vocabulary logits as the card computes them), the ratio, and the largest score difference.
"""

from __future__ import annotations

import argparse
import gc
import warnings

import torch

from common import checkpoint, peak_rss_gb, reset_peak_rss, stdlib_docstrings, timed
from q3embed import Reranker
from q3embed.engine.device import resolve_dtype
from q3embed.evaluate.parity import reference_rerank_scores

QUERY = "How do I read a file line by line and strip the trailing newline?"


def run_ours(model_dir, docs, dtype, max_length, reuse_prefix):
    reset_peak_rss()
    reranker = Reranker(str(model_dir), dtype=dtype, device="cpu", max_length=max_length, reuse_prefix=reuse_prefix,
                        compile="on")  # a long-running server's kernels (auto compiles at start-up there)
    reranker.score(QUERY, docs[:4])  # warm-up
    scores, seconds = timed(reranker.score, QUERY, docs)
    return scores, seconds, peak_rss_gb()


def reference_scores(model, tokenizer, docs, max_length):
    return reference_rerank_scores(model, tokenizer, [(QUERY, d) for d in docs], None, max_length)


def run_reference(model_dir, docs, dtype, max_length):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reset_peak_rss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    reference_scores(model, tokenizer, docs[:4], max_length)
    scores, seconds = timed(reference_scores, model, tokenizer, docs, max_length)
    rss = peak_rss_gb()
    del model
    gc.collect()
    return scores, seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.6B")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    model_dir = checkpoint("reranker", args.shape)
    docs = stdlib_docstrings(args.docs)
    dtype = resolve_dtype("auto", torch.device("cpu"))
    print(f"1 query x {len(docs)} documents, dtype {dtype}, threads {torch.get_num_threads()}")
    ours, seconds, rss = run_ours(model_dir, docs, dtype, args.max_length, reuse_prefix=True)
    plain, plain_seconds, _ = run_ours(model_dir, docs, dtype, args.max_length, reuse_prefix=False)
    ref, ref_seconds, ref_rss = run_reference(model_dir, docs, dtype, args.max_length)
    rows = [("q3embed, shared-prefix reuse", seconds, rss), ("q3embed, plain (no reuse)", plain_seconds, float("nan")),
            ("transformers reference (model card, batch 8)", ref_seconds, ref_rss)]
    for name, secs, peak in rows:
        print(f"{name:46s} {len(docs) / secs:7.2f} pairs/s  peak RSS {peak:.2f} GB")
    print(f"ratio q3embed / reference: {ref_seconds / seconds:.2f}x")
    print(f"max |score difference|: reuse vs plain {max(abs(a - b) for a, b in zip(ours, plain, strict=True)):.2e}, "
          f"q3embed vs reference {max(abs(a - b) for a, b in zip(ours, ref, strict=True)):.2e}")


if __name__ == "__main__":
    main()
