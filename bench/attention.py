"""Attention over one packed batch: one SDPA call per sequence against one call for the batch.

    python bench/attention.py [--device cpu|cuda] [--dtype bfloat16] [--rounds 5]

The 0.6B model's attention shapes (16 q heads, 8 kv heads, head_dim 128) over 16 sequences of
20-250 tokens (seeded). Times, per layer, q3embed's SdpaLoop (what the CPU runs), one compiled
flex_attention call with a document-causal block mask, and on a GPU q3embed's Varlen
(FlashAttention varlen), interleaved round by round; prints each median and the largest
difference from the loop. This is the measurement behind model/attention.py's choice.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from q3embed.model.attention import SdpaLoop, Varlen, varlen_available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequences", type=int, default=16)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    random.seed(0)
    torch.manual_seed(0)
    seq_lens = [random.randint(20, 250) for _ in range(args.sequences)]
    tokens = sum(seq_lens)
    q = torch.randn(tokens, 16, 128, dtype=dtype, device=device)
    k, v = torch.randn(2, tokens, 8, 128, dtype=dtype, device=device)

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    document = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(seq_lens)])

    def same_document_causal(b, h, q_index, k_index):
        return (document[q_index] == document[k_index]) & (k_index <= q_index)

    block_mask = create_block_mask(same_document_causal, None, None, tokens, tokens, device=str(device))
    flex = torch.compile(flex_attention, dynamic=False)
    loop = SdpaLoop()
    runs = {
        "sdpa loop": lambda: loop.causal(q, k, v, loop.layout(seq_lens, 0, device), None),
        "flex_attention": lambda: flex(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                       block_mask=block_mask, enable_gqa=True)[0].transpose(0, 1),
    }
    if varlen_available(device, dtype):
        varlen = Varlen()
        runs["varlen"] = lambda: varlen.causal(q, k, v, varlen.layout(seq_lens, 0, device), None)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with torch.inference_mode():
        expected = runs["sdpa loop"]()
        differences = {name: float((fn().float() - expected.float()).abs().max()) for name, fn in runs.items()}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    print(f"{len(seq_lens)} sequences, {tokens} tokens, {args.dtype} on {device}, {torch.get_num_threads()} threads")
    for name in runs:
        median = statistics.median(times[name]) * 1000
        print(f"  {name:15s} {median:8.2f} ms per layer  (max |difference| from the loop {differences[name]:.2e})")


if __name__ == "__main__":
    main()
