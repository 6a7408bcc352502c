"""q3embed's CPU kernels for the decoder's operations besides its products (model/csrc/decoder_ops.cpp)
against the eager torch ones they replace, op by op, at the 0.6B model's sizes, one process.

    cd bench && python decoder_ops.py [--tokens 13,512,2048] [--lengths 13;27;64x16;512;2048] [--repeats 20]

For each token count: RMSNorm over [T, 1024], the residual add and RMSNorm (eager: the add, then
the norm; the kernels: one pass), the q/k norm + RoPE over the fused projection's
[T, 24, 128] view, SwiGLU over [T, 2 x 3072] (median us of `repeats` calls, eager / kernel, and how
many bf16 values differ). For each batch of sequence lengths (`64x16`: 16 sequences of 64), causal
attention over the packed q/k/v of 16 query and 8 kv heads of 128: torch's SDPA, one call per
sequence (model.attention.SdpaLoop, the path elsewhere) against q3embed_cpu::causal_attention, one
call for the batch, and each one's largest error against the fp32 computation. Needs a CPU where
the kernels run (AVX512-BF16).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from common import median_seconds

from q3embed.model.attention import CpuKernel, Layout, SdpaLoop
from q3embed.model.block_linear import cpu_kernels_available
from q3embed.model.kernels import CPU_NATIVE, EAGER
from q3embed.model.qwen3 import rope_cos_sin

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE = 1024, 16, 8, 128, 3072  # the 0.6B's


def median_us(function: Callable[[], object], repeats: int) -> float:
    return median_seconds(function, repeats) * 1e6


def elementwise_rows(tokens: int, repeats: int) -> list[tuple[str, float, float, int, int]]:
    """(op, eager us, kernel us, values differing, values) at `tokens` tokens."""
    generator = torch.Generator().manual_seed(tokens)
    x = (torch.randn(tokens, HIDDEN, generator=generator) * 3).bfloat16()
    norm_weight = (torch.randn(HIDDEN, generator=generator) * 0.1 + 1).bfloat16()
    qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD_DIM, generator=generator).bfloat16()
    qk = qkv[:, :(HEADS + KV_HEADS) * HEAD_DIM].view(tokens, HEADS + KV_HEADS, HEAD_DIM)
    qk_weight = (torch.randn(HEADS + KV_HEADS, HEAD_DIM, generator=generator) * 0.1 + 1).bfloat16()
    cos, sin = rope_cos_sin(torch.arange(tokens), HEAD_DIM, 1_000_000.0)
    gate, up = (torch.randn(tokens, 2 * INTERMEDIATE, generator=generator) * 4).bfloat16().split(INTERMEDIATE, -1)
    residual = (torch.randn(tokens, HIDDEN, generator=generator) * 3).bfloat16()
    cases = (("RMSNorm [T, 1024]", lambda k: k.rms_norm(x, norm_weight, 1e-6)),
             ("add + RMSNorm [T, 1024]", lambda k: k.add_rms_norm(residual, x, norm_weight, 1e-6)),
             ("q/k norm + RoPE [T, 24, 128]", lambda k: k.norm_rope(qk, qk_weight, cos, sin, 1e-6)),
             ("SwiGLU [T, 3072]", lambda k: k.swiglu(gate, up)))
    rows = []
    for name, call in cases:
        eager, ours = (torch.cat(out) if isinstance(out, tuple) else out for out in (call(EAGER), call(CPU_NATIVE)))
        rows.append((name, median_us(lambda: call(EAGER), repeats), median_us(lambda: call(CPU_NATIVE), repeats),
                     int((eager != ours).sum()), eager.numel()))
    return rows


def attention_row(seq_lens: list[int], repeats: int) -> tuple[float, float, float, float]:
    """(SDPA us, kernel us, SDPA's and the kernel's largest error against fp32) for one batch."""
    tokens = sum(seq_lens)
    generator = torch.Generator().manual_seed(tokens)
    qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD_DIM, generator=generator).bfloat16()
    q = qkv[:, :HEADS * HEAD_DIM].view(tokens, HEADS, HEAD_DIM)
    k = qkv[:, HEADS * HEAD_DIM:(HEADS + KV_HEADS) * HEAD_DIM].view(tokens, KV_HEADS, HEAD_DIM)
    v = qkv[:, (HEADS + KV_HEADS) * HEAD_DIM:].view(tokens, KV_HEADS, HEAD_DIM)
    layout = Layout(seq_lens)
    exact = SdpaLoop().causal(q.float(), k.float(), v.float(), layout, None)
    sdpa, kernel = SdpaLoop(), CpuKernel()
    errors = [float((b.causal(q, k, v, layout, None).float() - exact).abs().max()) for b in (sdpa, kernel)]
    times = [median_us(lambda b=b: b.causal(q, k, v, layout, None), repeats) for b in (sdpa, kernel)]
    return times[0], times[1], errors[0], errors[1]


def parse_batch(spec: str) -> list[int]:
    """"100,200,50" -> [100, 200, 50]; "64x16" -> 16 sequences of 64."""
    lengths = []
    for part in spec.split(","):
        length, _, count = part.partition("x")
        lengths += [int(length)] * int(count or 1)
    return lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="13,512,2048")
    parser.add_argument("--lengths", default="13;27;64x16;100,200,50;512;2048")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not cpu_kernels_available():
        raise SystemExit("q3embed's CPU kernels do not run here (AVX512-BF16 and a C++ compiler needed)")
    print(f"load average {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")
    with torch.inference_mode():
        for tokens in (int(t) for t in args.tokens.split(",")):
            for name, eager, ours, differ, values in elementwise_rows(tokens, args.repeats):
                print(f"{tokens:>5} tokens  {name:<30} eager {eager:9.1f} us  kernel {ours:9.1f} us  "
                      f"{eager / ours:5.2f}x  differing {differ} of {values}")
        for spec in args.lengths.split(";"):
            sdpa, ours, sdpa_error, our_error = attention_row(parse_batch(spec), max(3, args.repeats // 4))
            print(f"attention {spec:<14} SDPA {sdpa:10.1f} us  kernel {ours:10.1f} us  {sdpa / ours:5.2f}x  "
                  f"max error vs fp32: SDPA {sdpa_error:.4f}, kernel {our_error:.4f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
