"""The decoder's linear layers: nn.Linear, with fp32 products of few rows sent to oneDNN on a CPU.

torch multiplies fp32 on a CPU with MKL. For the few rows of one interactive query MKL streams
the weights at a fraction of memory speed, and oneDNN's kernel, which torch also ships (Inductor
calls it for frozen linear layers), is faster on the same plain weights: 3072x1024 products at 1 /
27 rows took 0.39 / 1.78 ms against MKL's 0.64 / 2.79 ms (bench/linear_kernels.py), and a 0.6B
text of 8 tokens ~176 ms against ~263 ms (bench/single_query.py; 2-core AVX2 EPYC). From some
hundreds of rows on MKL is as fast or faster (2,048 rows: 73 ms against oneDNN's 87 ms), so
batches stay on it. Both are fp32 throughout: only the order of the sums differs.

bf16 goes to oneDNN already, through torch, but on weights in torch's plain row-major layout,
which oneDNN reorders into its blocked one on every call. `pack_decoder_linears` stores each bf16
weight in that blocked layout once, in place of the plain one (no second copy): on a 2-core
AVX512-BF16 EPYC, 3072x1024 products at 1 / 8 / 27 rows took 0.30 / 0.27 / 0.54 ms against 0.37 /
0.61 / 0.75 ms plain, and 35.9 against 41.4 ms at 2,048 rows, the same values bit for bit
(bench/linear_kernels.py); on an AMX Xeon it made no difference. A packed weight is an opaque
tensor that only oneDNN reads, so the packed model is for inference alone.

Where q3embed's own CPU kernels are preferred (AVX512-BF16 without AMX: model/block_linear.py),
`pack_decoder_linears` packs bf16 weights for them instead (`pack_for_kernel`: tiles of 32 outputs,
in place of the plain weight, again one copy): their bf16 kernel prefetches the weights ahead of
its reads, and on a 2-core Zen 4 ran 1-27-row products 1.1-1.5x faster than oneDNN's packed ones,
and 512-2,048-row products at 0.85-1.05x of them (docs/benchmarks.md). The same bf16 products,
summed in fp32 in another order.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block_linear import cpu_kernels_run, pack_tiles, tiles_fit

__all__ = ["Linear", "ONEDNN_MAX_ROWS", "onednn_linear_available", "pack_decoder_linears"]

ONEDNN_MAX_ROWS = 256  # the crossover measured above: equal at 512 rows, MKL ahead at 2,048


@functools.cache
def onednn_linear_available() -> bool:
    """torch built with oneDNN (every x86 and ARM wheel) and its fused linear op registered."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state-dict keys) that sends x [rows, in] of at most
    ONEDNN_MAX_ROWS rows in fp32 on a CPU to oneDNN, and everything to oneDNN once its weight is
    packed for it (`pack_for_onednn`); every other case is F.linear."""

    @property
    def packed(self) -> bool:
        """The weight is in a kernel's own layout (oneDNN's, or q3embed's tiles)."""
        return self.weight.is_mkldnn or self.tiled

    @property
    def tiled(self) -> bool:
        return self.weight.dim() == 4  # q3embed's tiles [out/32, in/2, 32, 2]

    def pack_for_onednn(self) -> bool:
        """Replace a bf16 CPU weight [out, in] by oneDNN's blocked layout of it; -> whether it was
        packed (False where it is not bf16 on a CPU, or torch has no oneDNN linear)."""
        weight = self.weight
        if (self.packed or weight.dtype != torch.bfloat16 or weight.device.type != "cpu"
                or not onednn_linear_available()):
            return False
        # None: a layout for any number of rows (a row-count hint would tune it for one)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self.weight = nn.Parameter(packed, requires_grad=False)
        return True

    def pack_for_kernel(self) -> bool:
        """Replace a bf16 CPU weight [out, in] by q3embed's tiles of it, for its bf16 kernel; ->
        whether it was packed (False where it is not bf16 on a CPU, its sizes are not whole tiles,
        or the kernels do not run here)."""
        if (self.packed or not tiles_fit(self.out_features, self.in_features)
                or not cpu_kernels_run(self.weight.dtype, self.weight.device)):
            return False
        self.weight = nn.Parameter(pack_tiles(self.weight.detach()), requires_grad=False)
        return True

    def forward(self, x: Tensor) -> Tensor:
        if self.tiled:
            if x.dim() == 2 and self.bias is None:  # the decoder's [T, in]: no reshaping (~2 us a call)
                return torch.ops.q3embed_cpu.bf16_linear(x, self.weight)
            rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]: the kernel is 2-D
            out = torch.ops.q3embed_cpu.bf16_linear(rows, self.weight)  # [rows, out] bf16
            if self.bias is not None:
                out = out + self.bias
            return out.view(*x.shape[:-1], self.out_features)
        if self.packed:
            rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]: oneDNN's op is 2-D
            out = _onednn_linear(rows, self.weight, self.bias)
            return out.view(*x.shape[:-1], out.shape[-1])
        if (x.dim() == 2 and x.shape[0] <= ONEDNN_MAX_ROWS and x.dtype == torch.float32
                and x.device.type == "cpu" and self.weight.dtype == torch.float32
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                and onednn_linear_available()):
            return _onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """oneDNN's linear with no fused activation: x [rows, in], weight plain or packed [out, in]."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def pack_decoder_linears(model: nn.Module) -> int:
    """Pack every bf16 `Linear` of `model` on a CPU for q3embed's kernels where they are preferred
    and its sizes fit them, else for oneDNN (see the module docstring); -> how many were packed.
    Not for a model that Inductor will freeze: it packs its own."""
    layers = [layer for layer in model.modules() if isinstance(layer, Linear)]
    return sum(layer.pack_for_kernel() or layer.pack_for_onednn() for layer in layers)
