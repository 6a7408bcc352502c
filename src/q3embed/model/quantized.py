"""Int8 matrix products on a CPU (quantize="int8", opt-in): the decoder's linear layers with int8
weights and int8 activations. Where the Q8_0 kernels run (bf16 on AVX512-BF16 and VNNI:
model/block_linear.py) both are Q8_0 blocks, one scale per 32 inputs, as llama.cpp computes a Q8_0
file (its activations quantized per row and block, integer dot products per block): faster than
fbgemm there and closer to the model (docs/benchmarks.md). Elsewhere they are fbgemm's int8
linear, with int8 weights per output channel and int8 activations per token, as described below.

A single query spends nearly all its time in matrix products of a few rows, which stream the
weights. fbgemm's int8 kernels read a quarter of fp32's bytes (half of bf16's) and ran 140 products
of 3072x1024 in 19 / 30 / 43 ms at 1 / 8 / 27 rows against bf16's 51 / 55 / 58 ms on a 2-core
AMX Xeon; on a 2-core AVX2 EPYC (fp32 there, bf16 is emulated) a 27-token query took 126 ms
against fp32's ~290 ms (docs/benchmarks.md). Weights are quantized once, symmetric per output
channel, from the checkpoint's own values (bf16 safetensors or a dequantized GGUF).

Activations are quantized per token: each row is divided by its largest magnitude before the
kernel quantizes it with one fixed scale, and the product is multiplied back, row by row (a linear
map commutes with that). The kernel's own dynamic mode takes one scale for the whole batch, so one
token of large activations would cost every other token its precision (decoder LLMs commonly
carry a few such tokens): cosine against fp32 rose from 0.980 to 0.994 on the random 0.6B
checkpoint (AVX2).

That is an approximation of the model, not the model: its cosine against the exact computation
is measured and reported (bench/single_query.py, bench/quantized.py, tests/test_quantized.py),
and the exact dtype stays the default. The norms, attention and the reranker's head stay as they
are; the embedding table is kept as int8 blocks (Int8Embedding), a Q8_0 file's own unchanged.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor, nn

from .block_linear import Q8Linear, cpu_flags, tiles_fit

__all__ = ["Int8Linear", "Int8Embedding", "quantize_decoder", "cpu_has_vnni"]


@functools.cache
def cpu_has_vnni() -> bool:
    """AVX512-VNNI / AVX-VNNI: int8 products accumulate without saturating 16-bit intermediates."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


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


class Int8Embedding(nn.Module):
    """An embedding table as GGUF's Q8_0 lays it out: int8 values with one fp16 scale per block of
    32 along each row, a looked-up row dequantized to the model's dtype.

    A table taken from a Q8_0 file (loaded in fp32) comes back bit for bit: each block's largest
    value is +-127 x its scale there, so requantizing its dequantized rows finds the same scale and
    the same integers. Only the rows a batch reads are dequantized (the table is 151,669 x hidden:
    a quarter of the 0.6B model in fp32)."""

    BLOCK = 32
    ROWS_AT_A_TIME = 8192  # quantized in slices: an fp32 copy of the whole table is what we avoid

    def __init__(self, values: Tensor, scales: Tensor, dtype: torch.dtype) -> None:
        """values int8 [vocab, hidden], scales fp16 [vocab, hidden / block]; rows come out in `dtype`."""
        super().__init__()
        self.dtype = dtype
        self.blocks = scales.shape[1]
        self.block = values.shape[1] // self.blocks
        self.register_buffer("values", values)  # [vocab, hidden]
        self.register_buffer("scales", scales)  # [vocab, blocks]

    @classmethod
    def quantized(cls, embedding: nn.Embedding) -> Int8Embedding:
        """`embedding`'s table in Q8_0 blocks (one block per row where hidden is not a multiple of 32)."""
        table = embedding.weight.detach()  # [vocab, hidden]
        vocab, hidden = table.shape
        block = cls.BLOCK if hidden % cls.BLOCK == 0 else hidden
        blocks = hidden // block
        scales = torch.empty(vocab, blocks, dtype=torch.float16)
        values = torch.empty(vocab, hidden, dtype=torch.int8)
        for start in range(0, vocab, cls.ROWS_AT_A_TIME):
            part = slice(start, start + cls.ROWS_AT_A_TIME)
            rows = table[part].float().view(-1, blocks, block)  # [r, blocks, block]
            scale = (rows.abs().amax(dim=-1) / 127).to(torch.float16)  # [r, blocks]
            scales[part] = scale
            divisor = scale.float().clamp(min=torch.finfo(torch.float16).tiny).unsqueeze(-1)
            values[part] = (rows / divisor).round().clamp(-127, 127).to(torch.int8).view(-1, hidden)
        return cls(values, scales, table.dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids [T] -> [T, hidden] in the table's original dtype."""
        values = self.values[input_ids].view(-1, self.blocks, self.block).float()  # [T, blocks, block]
        rows = values * self.scales[input_ids].float().unsqueeze(-1)
        return rows.view(input_ids.shape[0], -1).to(self.dtype)


def quantize_decoder(model: nn.Module, blocks: bool = False) -> int:
    """quantize="int8" for a Qwen3Model: every linear layer of its layers (attention and MLP) computes
    in int8, the originals freed: as Q8_0 blocks times inputs quantized to Q8_0 blocks (`blocks`,
    where the Q8_0 kernels run: model/block_linear.py; a Q8_0 file's blocks kept and repacked) or as
    an Int8Linear (fbgemm, 8-bit activations per token); its embedding table an Int8Embedding.
    -> how many linear layers were replaced."""
    if not isinstance(model.embed_tokens, Int8Embedding):  # a Q8_0 file's table is kept as loaded
        model.embed_tokens = Int8Embedding.quantized(model.embed_tokens)
    replaced = 0
    for parent in list(model.layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Q8Linear):  # a Q8_0 file's (only where the kernels run)
                setattr(parent, name, child.with_int8_inputs())
            elif isinstance(child, nn.Linear):
                use_blocks = blocks and child.bias is None and tiles_fit(child.out_features, child.in_features)
                setattr(parent, name, Q8Linear.quantized(child, int8_inputs=True) if use_blocks else Int8Linear(child))
            else:
                continue
            replaced += 1
    return replaced
