"""Int8 matrix products on a CPU (quantize="int8", opt-in): the decoder's linear layers as fbgemm's
int8 linear, with int8 weights per output channel and int8 activations per token.

A single query spends nearly all its time in matrix products of a few rows, which stream the
weights. fbgemm's int8 kernels read a quarter of fp32's bytes (half of bf16's) and ran 140 products
of 3072x1024 in 19 / 30 / 43 ms at 1 / 8 / 27 rows against bf16's 51 / 55 / 58 ms on a 2-core
AMX Xeon; on a 2-core AVX2 EPYC (fp32 there, bf16 is emulated) a 27-token query took 126 ms
against fp32's 394 ms (docs/benchmarks.md). Weights are quantized once, symmetric per output
channel, from the checkpoint's own values (bf16 safetensors or a dequantized GGUF).

Activations are quantized per token: each row is divided by its largest magnitude before the
kernel quantizes it with one fixed scale, and the product is multiplied back, row by row (a linear
map commutes with that). The kernel's own dynamic mode takes one scale for the whole batch, so one
token of large activations would cost every other token its
precision (decoder LLMs commonly carry a few such tokens): cosine against fp32 rose from 0.980 to
0.994 on the random 0.6B checkpoint (AVX2).

That is an approximation of the model, not the model: its cosine against the exact computation
is measured and reported (bench/single_query.py, bench/quantized.py, tests/test_quantized.py),
and the exact dtype stays the default. The embedding table, the norms, attention and the
reranker's head stay as they are.
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
    """nn.Linear's computation with int8 weights [out, in] and int8 activations, per token."""

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
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.bias = bias  # added after the rows are scaled back: the kernel would scale it too
        # A row divided by its largest magnitude lies in [-1, 1]; the kernel maps it to uint8 with
        # this scale and zero point. Without VNNI the u8 x s8 products are summed in pairs in 16 bits:
        # 7-bit activations (0..127) keep them from saturating.
        levels = 127 if cpu_has_vnni() else 63
        self.activation_scale, self.activation_zero_point = 1.0 / levels, levels + 1

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in] (any float dtype) -> [..., out] in x's dtype."""
        rows = x.reshape(-1, self.in_features).float()  # [N, in]
        magnitudes = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-30)  # [N, 1]
        out = _int8_linear(rows / magnitudes, self.activation_scale, self.activation_zero_point, self.packed)
        out.mul_(magnitudes)  # [N, out]
        if self.bias is not None:
            out.add_(self.bias)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def _int8_linear(rows: Tensor, scale: float, zero_point: int, packed: object) -> Tensor:
    """fbgemm: quantize `rows` [N, in] with the given parameters, int8 product, fp32 out [N, out]."""
    return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(rows, scale, zero_point, packed)


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
