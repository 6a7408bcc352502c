"""Int8 matrix products on a CPU (quantize="int8", opt-in): the decoder's linear layers as fbgemm's
dynamic int8 linear.

A single query spends nearly all its time in matrix products of a few rows, which stream the
weights: torch's bf16 kernels do so at 8-16 GB/s here. fbgemm's int8 kernels (VNNI) read half the
bytes and ran 140 products of 3072x1024 in 19 / 30 / 43 ms at 1 / 8 / 27 rows against bf16's
51 / 55 / 58 ms (2-core Xeon, docs/benchmarks.md). Weights are quantized once, symmetric per output
channel, from the checkpoint's own values (bf16 safetensors or a dequantized GGUF); activations
are quantized per call, per tensor, by the kernel. That is an approximation of the model, not the
model: its cosine against the exact computation is measured and reported (bench/single_query.py,
tests/test_quantized.py), and bf16 stays the default.

The embedding table, the norms, attention and the reranker's head stay as they are. Measured
(docs/benchmarks.md): faster for single queries, slower than AMX bf16 for batches, and no memory
saved yet (fbgemm's packed weight keeps the original int8 tensor too).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["Int8Linear", "quantize_linears", "cpu_has_vnni"]


@functools.cache
def cpu_has_vnni() -> bool:
    """AVX512-VNNI / AVX-VNNI: int8 products accumulate without saturating 16-bit intermediates."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class Int8Linear(nn.Module):
    """nn.Linear's computation with int8 weights [out, in] and per-call int8 activations."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # [out, in]
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()  # [out]
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated as a Python API, the kernels are not
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias)
        # Without VNNI the u8 x s8 products are summed in pairs in 16 bits: one bit less of range
        # keeps them from saturating.
        self.reduce_range = not cpu_has_vnni()

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in] (any float dtype) -> [..., out] in x's dtype."""
        rows = x.reshape(-1, self.in_features).float()  # [N, in]
        out = torch.ops.quantized.linear_dynamic(rows, self.packed, reduce_range=self.reduce_range)  # [N, out]
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def quantize_linears(layers: nn.Module) -> int:
    """Replace every nn.Linear below `layers` (the decoder layers: attention and MLP) by an
    Int8Linear, freeing the original weights; -> how many were replaced."""
    replaced = 0
    for parent in list(layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
                replaced += 1
    return replaced
