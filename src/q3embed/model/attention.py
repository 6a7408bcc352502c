"""Causal attention over a packed batch, in one of three ways, chosen once per model:

    SdpaLoop   one scaled_dot_product_attention call per sequence per layer. On a CPU this is
               the fastest there is: SDPA's fused CPU kernel per sequence (12 ms per layer for
               16 sequences, 2,446 tokens, bf16) against 22 ms for one compiled flex_attention
               call with a document-causal block mask (bench notes in docs/benchmarks.md).
               Nested jagged tensors are no alternative: their SDPA refuses is_causal.
    CpuKernel  q3embed's own kernel (csrc/decoder_ops.cpp): one call per layer for the whole
               batch, grouped-query heads read in place, bf16 on a CPU where q3embed's kernels
               run (model.block_linear). 5-6x faster than SDPA for a 13-27-token query or 16
               sequences of 64 tokens, 2.3x at 512 tokens, as fast at 2,048-4,096 (2-core Zen 4);
               sequences continue a shared prefix (the reranker's) in the same call; a batch
               longer than CPU_KERNEL_MAX_LEN (prefix included) runs the SdpaLoop.
    Varlen     torch.nn.attention.varlen.varlen_attn: FlashAttention over the whole packed batch
               in one call per layer, sequences told apart by cumulative lengths (cu_seqlens).
               On a GPU the loop costs a kernel launch per sequence per layer (thousands per
               batch); this costs one. CUDA only, bf16/fp16 only.

A batch's `Layout` is built once per forward pass (the varlen tensors go to the device once, not
per layer). Keys continue a shared prefix (the reranker's): for Varlen each sequence's keys are
the prefix followed by its own tokens, and FlashAttention's causal mask is aligned at the bottom
right, so own token j sees the P prefix keys and own keys 0..j, as in SdpaLoop's explicit mask.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .block_linear import cpu_kernels_run
from .transfer import to_device

__all__ = ["AttentionBackend", "Layout", "SdpaLoop", "Varlen", "CpuKernel", "ATTENTION_CHOICES", "choose_attention",
           "varlen_available", "varlen_attention_function", "CPU_KERNEL_MAX_LEN"]

ATTENTION_CHOICES = ("auto", "sdpa", "varlen", "cpu-kernel")
# The longest sequence CpuKernel attends itself: as far as it was measured against SDPA (2-core
# Zen 4, bf16, 0.6B heads: 2.3x faster at 512 tokens, 1.0-1.2x at 1,024-4,096; docs/benchmarks.md).
CPU_KERNEL_MAX_LEN = 4096
Prefix = tuple[Tensor, Tensor]  # k, v of a shared prefix: [P, kv_heads, head_dim] each


@dataclass(frozen=True)
class Layout:
    """Where the sequences of a packed batch lie, as each backend needs it."""

    seq_lens: list[int]
    prefix_len: int = 0  # tokens of a shared prefix every sequence continues (0: none)
    cu_q: Tensor | None = None  # Varlen: [B + 1] int32, cumulative query lengths
    cu_k: Tensor | None = None  # Varlen: [B + 1] int32, cumulative key lengths (prefix + own)
    key_order: Tensor | None = None  # Varlen with a prefix: [sum(P + L)] rows of cat(prefix, keys)

    @property
    def max_len(self) -> int:
        return max(self.seq_lens)


class AttentionBackend(Protocol):
    name: str

    def layout(self, seq_lens: list[int], prefix_len: int, device: torch.device) -> Layout:
        """Built once per forward pass."""
        ...

    def causal(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        """q [T, heads, d], k/v [T, kv_heads, d] -> [T, heads, d], causal within each sequence."""
        ...

    def last_token(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        """q [B, heads, d] (each sequence's last token), k/v [T, kv_heads, d] -> [B, heads, d]."""
        ...


# ---------------------------------------------------------------------------- one call per sequence


def _prefix_causal_mask(queries: int, prefix: int, device: torch.device) -> Tensor:
    """[L, P + L] bool: query j (absolute position P + j) sees keys 0 .. P + j."""
    keys = torch.arange(prefix + queries, device=device)
    return keys[None, :] <= (prefix + torch.arange(queries, device=device))[:, None]


def expand_kv(x: Tensor, groups: int) -> Tensor:
    """[T, kv_heads, head_dim] -> [T, kv_heads * groups, head_dim]: each kv head serves `groups`
    consecutive q heads, as in the reference's repeat_kv."""
    if groups == 1:
        return x
    tokens, kv_heads, head_dim = x.shape
    # expand + reshape, not repeat_interleave: the same copy, with no host sync that could break a
    # CUDA graph capture (model.graphs)
    return x[:, :, None, :].expand(tokens, kv_heads, groups, head_dim).reshape(tokens, kv_heads * groups, head_dim)


def _expand_for_sdpa(k: Tensor, v: Tensor, prefix: Prefix | None, groups: int) -> tuple[Tensor, Tensor, Prefix | None]:
    """k/v [T, kv_heads, d] -> [T, heads, d]; prefix k/v [P, kv_heads, d] -> [1, heads, P, d].

    SDPA's fused (flash) CPU kernel takes only 4-D inputs with as many kv heads as q heads;
    3-D inputs or enable_gqa fall back to the unfused math kernel, which is several times
    slower in bf16. Expanding the kv heads once over the packed tensor is a cheap copy.
    """
    if prefix is not None:
        prefix = (expand_kv(prefix[0], groups).transpose(0, 1)[None],
                  expand_kv(prefix[1], groups).transpose(0, 1)[None])
    return expand_kv(k, groups), expand_kv(v, groups), prefix


class SdpaLoop:
    name = "sdpa"

    def layout(self, seq_lens: list[int], prefix_len: int, device: torch.device) -> Layout:
        return Layout(seq_lens, prefix_len)

    def causal(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        k, v, prefix = _expand_for_sdpa(k, v, prefix, q.shape[1] // k.shape[1])
        out = torch.empty_like(q)
        start = 0
        for length in layout.seq_lens:
            end = start + length
            qi = q[start:end].transpose(0, 1)[None]  # [1, heads, L, head_dim]
            ki = k[start:end].transpose(0, 1)[None]
            vi = v[start:end].transpose(0, 1)[None]
            if prefix is None:
                oi = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True)
            else:
                ki, vi = torch.cat((prefix[0], ki), dim=2), torch.cat((prefix[1], vi), dim=2)  # [1, heads, P + L, d]
                mask = _prefix_causal_mask(length, prefix[0].shape[2], q.device)
                oi = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask)
            out[start:end] = oi[0].transpose(0, 1)
            start = end
        return out

    def last_token(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        # The last token sees every key of its sequence (and the prefix): no mask.
        k, v, prefix = _expand_for_sdpa(k, v, prefix, q.shape[1] // k.shape[1])
        out = torch.empty_like(q)
        start = 0
        for i, length in enumerate(layout.seq_lens):
            end = start + length
            qi = q[i][None, :, None, :]  # [1, heads, 1, head_dim]
            ki = k[start:end].transpose(0, 1)[None]  # [1, heads, L, head_dim]
            vi = v[start:end].transpose(0, 1)[None]
            if prefix is not None:
                ki, vi = torch.cat((prefix[0], ki), dim=2), torch.cat((prefix[1], vi), dim=2)  # [1, heads, P + L, d]
            out[i] = F.scaled_dot_product_attention(qi, ki, vi)[0, :, 0]
            start = end
        return out


_SINGLE = SdpaLoop()  # what Varlen runs for a batch of one sequence, CpuKernel for what it does not take

# ---------------------------------------------------------------------------- q3embed's CPU kernel


class CpuKernel:
    name = "cpu-kernel"

    def layout(self, seq_lens: list[int], prefix_len: int, device: torch.device) -> Layout:
        return Layout(seq_lens, prefix_len)

    @staticmethod
    def _takes(q: Tensor, layout: Layout) -> bool:
        return (q.dtype == torch.bfloat16 and q.shape[-1] % 32 == 0
                and layout.max_len + layout.prefix_len <= CPU_KERNEL_MAX_LEN)

    def causal(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        if not self._takes(q, layout):
            return _SINGLE.causal(q, k, v, layout, prefix)
        return torch.ops.q3embed_cpu.causal_attention(q, k, v, layout.seq_lens, False,
                                                      *(prefix or (None, None)))  # [T, heads, d]

    def last_token(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        if not self._takes(q, layout):
            return _SINGLE.last_token(q, k, v, layout, prefix)
        return torch.ops.q3embed_cpu.causal_attention(q.contiguous(), k, v, layout.seq_lens, True,
                                                      *(prefix or (None, None)))  # [B, heads, d]


# ---------------------------------------------------------------------------- one call per layer

VarlenFunction = Callable[..., Tensor]


def varlen_attention_function() -> VarlenFunction | None:
    """torch's varlen_attn where this torch has it (2.9+), else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _causal_keywords(function: VarlenFunction) -> tuple[dict[str, object], bool]:
    """How this torch's varlen_attn is told "causal" (window_size=(-1, 0) from 2.10 on, is_causal
    before), and whether it takes fewer kv heads than q heads itself (enable_gqa)."""
    parameters = inspect.signature(function).parameters
    causal: dict[str, object] = {"window_size": (-1, 0)} if "window_size" in parameters else {"is_causal": True}
    return causal, "enable_gqa" in parameters


class Varlen:
    name = "varlen"

    def __init__(self, function: VarlenFunction | None = None) -> None:
        """`function` has varlen_attn's signature; tests pass a reference that runs on a CPU."""
        found = function or varlen_attention_function()
        if found is None:
            raise RuntimeError("this torch has no torch.nn.attention.varlen")
        self.function = found
        self.causal_keywords, self.native_gqa = _causal_keywords(found)

    def layout(self, seq_lens: list[int], prefix_len: int, device: torch.device) -> Layout:
        if len(seq_lens) == 1 and not prefix_len:
            # One sequence is one SDPA call anyway (flash on CUDA), and its layout holds no device
            # tensor: a CUDA graph can capture it (model.graphs).
            return Layout(seq_lens)
        lengths = torch.tensor(seq_lens, dtype=torch.int32)
        cu_q = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))  # [B + 1]
        if not prefix_len:
            cu_q = to_device(cu_q, device)
            return Layout(seq_lens, 0, cu_q, cu_q)
        cu_k = F.pad((lengths + prefix_len).cumsum(0, dtype=torch.int32), (1, 0))
        # Row i of cat(prefix, own keys): prefix rows 0..P-1, own token t at P + t.
        own = torch.arange(sum(seq_lens)) + prefix_len
        pieces, start = [], 0
        for length in seq_lens:
            pieces += [torch.arange(prefix_len), own[start:start + length]]
            start += length
        key_order = torch.cat(pieces)  # [sum(P + L)]
        return Layout(seq_lens, prefix_len, to_device(cu_q, device), to_device(cu_k, device),
                      to_device(key_order, device))

    def _keys(self, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None, groups: int) -> tuple[Tensor, Tensor]:
        if prefix is not None:  # each sequence's keys: the prefix, then its own
            k = torch.cat((prefix[0], k))[layout.key_order]  # [sum(P + L), kv_heads, d]
            v = torch.cat((prefix[1], v))[layout.key_order]
        if not self.native_gqa:
            k, v = expand_kv(k, groups), expand_kv(v, groups)
        return k, v

    def _call(self, q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
              causal: bool) -> Tensor:
        keywords = dict(self.causal_keywords) if causal else {}
        if self.native_gqa and k.shape[1] != q.shape[1]:
            keywords["enable_gqa"] = True
        # q, k, v may be views into one fused projection (model.qwen3): FlashAttention wants each dense
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        return self.function(q, k, v, cu_q, cu_k, max_q, max_k, **keywords)

    def causal(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        if layout.cu_q is None:
            return _SINGLE.causal(q, k, v, layout, prefix)
        k, v = self._keys(k, v, layout, prefix, q.shape[1] // k.shape[1])
        # cu_k / max_k include the prefix; the causal mask is aligned at the bottom right
        return self._call(q, k, v, layout.cu_q, layout.cu_k, layout.max_len, layout.max_len + layout.prefix_len,
                          causal=True)

    def last_token(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout, prefix: Prefix | None) -> Tensor:
        if layout.cu_q is None:
            return _SINGLE.last_token(q, k, v, layout, prefix)
        k, v = self._keys(k, v, layout, prefix, q.shape[1] // k.shape[1])
        ones = torch.arange(len(layout.seq_lens) + 1, dtype=torch.int32, device=q.device)  # one query each (no copy)
        return self._call(q, k, v, ones, layout.cu_k, 1, layout.max_len + layout.prefix_len, causal=False)


def varlen_available(device: torch.device, dtype: torch.dtype) -> bool:
    """FlashAttention's varlen kernel: CUDA, bf16 or fp16, and a torch that exposes it."""
    half = dtype in (torch.bfloat16, torch.float16)
    return device.type == "cuda" and half and varlen_attention_function() is not None


def choose_attention(choice: str, device: torch.device, dtype: torch.dtype) -> AttentionBackend:
    """auto: Varlen where it runs (CUDA, bf16/fp16), CpuKernel where q3embed's CPU kernels run
    (bf16, AVX512-BF16, no AMX), else SdpaLoop; sdpa / varlen / cpu-kernel: that one (where it
    cannot run, a ValueError naming why)."""
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f"unknown attention {choice!r}: use {', '.join(ATTENTION_CHOICES)}")
    where = f"here: {device.type}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}"
    if choice == "cpu-kernel" or (choice == "auto" and device.type == "cpu"):
        if cpu_kernels_run(dtype, device):
            return CpuKernel()
        if choice == "cpu-kernel":
            raise ValueError(f"attention 'cpu-kernel' needs bf16 on a CPU with AVX512-BF16 and no AMX where "
                             f"q3embed's kernels build (a C++ compiler and ninja) ({where})")
    if choice == "sdpa" or (choice == "auto" and not varlen_available(device, dtype)):
        return SdpaLoop()
    if not varlen_available(device, dtype):
        raise ValueError(f"attention 'varlen' needs a CUDA device, bf16 or fp16, and torch >= 2.9 with "
                         f"torch.nn.attention.varlen ({where})")
    return Varlen()
