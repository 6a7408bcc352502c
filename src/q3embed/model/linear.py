"""The decoder's linear layers: nn.Linear, with fp32 products of few rows sent to oneDNN on a CPU.

torch multiplies fp32 on a CPU with MKL. For the few rows of one interactive query MKL streams
the weights at a fraction of memory speed, and oneDNN's kernel, which torch also ships (Inductor
calls it for frozen linear layers), is faster on the same plain weights: 3072x1024 products at 1 /
27 rows took 0.39 / 1.78 ms against MKL's 0.64 / 2.79 ms (bench/linear_kernels.py), and a 0.6B
text of 8 tokens ~176 ms against ~263 ms (bench/single_query.py; 2-core AVX2 EPYC). From some
hundreds of rows on MKL is as fast or faster (2,048 rows: 73 ms against oneDNN's 87 ms), so
batches stay on it. Both are fp32 throughout: only the order of the sums differs. bf16 goes to
oneDNN already, through torch.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Linear", "ONEDNN_MAX_ROWS", "onednn_linear_available"]

ONEDNN_MAX_ROWS = 256  # the crossover measured above: equal at 512 rows, MKL ahead at 2,048


@functools.cache
def onednn_linear_available() -> bool:
    """torch built with oneDNN (every x86 and ARM wheel) and its fused linear op registered."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state-dict keys) that sends x [rows, in] of at most
    ONEDNN_MAX_ROWS rows in fp32 on a CPU to oneDNN; every other case is F.linear."""

    def forward(self, x: Tensor) -> Tensor:
        if (x.dim() == 2 and x.shape[0] <= ONEDNN_MAX_ROWS and x.dtype == torch.float32
                and x.device.type == "cpu" and self.weight.dtype == torch.float32
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                and onednn_linear_available()):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)
