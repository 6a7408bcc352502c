"""The matrix products a forward pass is made of, kernel by kernel, at the row counts users live in.

    cd bench && python linear_kernels.py [--matrices 20] [--rounds 7]

`--matrices` distinct 3072x1024 weights (the 0.6B model's MLP shape; 20 of them are 250 MB in
fp32, more than any cache, so every product streams its weights from memory as a forward pass
does), multiplied by 1, 8, 27 (one query), 256 and 2,048 rows (batches). Median milliseconds per
product and the GB/s of weights that makes, for: torch's F.linear in fp32 (MKL), oneDNN's fp32
linear on the same plain weights and on weights packed for it, q3embed's Linear (model/linear.py:
oneDNN up to 256 rows, MKL above), F.linear in bf16, q3embed's Linear in bf16 (its weight packed
for oneDNN, as the engine does on a CPU), quantize=int8's Int8Linear (fbgemm, activations per
token) and, where they run (AVX512-BF16), q3embed's own kernels (model/block_linear.py): bf16
weights in tiles (what the engine runs where it prefers them), the same tiles in 2 MB pages
(where the engine keeps them) and Q8_0 blocks (1.0625 bytes a weight) times bf16 activations (a
Q8_0 file's default) and times activations quantized to Q8_0 (quantize=int8 there). Prints
the CPU's flags that decide which of them can be fast, and the load average.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import median_seconds

from q3embed.engine.memory import huge_page_buffer
from q3embed.model.block_linear import Q8Linear, cpu_flags, cpu_kernels_available, pack_tiles, quantize_q8_0
from q3embed.model.linear import Linear
from q3embed.model.quantized import Int8Linear

ROWS = (1, 8, 13, 27, 256, 2048)
OUT, IN = 3072, 1024


def wanted_flags() -> str:
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
    return " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/vnni/bf16/amx"


def bf16_linear(x: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    return torch.ops.q3embed_cpu.bf16_linear(x, tiles)


def in_huge_pages(tensors: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Copies of `tensors` in one mapping on 2 MB pages; None where the system gives none."""
    arena = huge_page_buffer(sum(t.numel() * t.element_size() for t in tensors))
    if arena is None:
        return None
    copies, offset = [], 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        copies.append(arena[offset:offset + nbytes].view(tensor.dtype).view(tensor.shape).copy_(tensor))
        offset += nbytes
    return copies


def kernels(count: int) -> dict[str, tuple[float, list[Callable[[torch.Tensor], torch.Tensor]]]]:
    """Per kernel: the bytes of one weight element, and one callable per weight matrix:
    x [rows, IN] fp32 -> [rows, OUT]."""
    torch.manual_seed(0)
    linears = [Linear(IN, OUT, bias=False) for _ in range(count)]
    weights = [layer.weight.detach() for layer in linears]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
    bf16 = [w.bfloat16() for w in weights]
    packed_bf16 = [Linear(IN, OUT, bias=False).to(torch.bfloat16) for _ in range(count)]
    for layer, weight in zip(packed_bf16, bf16, strict=True):
        layer.weight.data.copy_(weight)
        layer.pack_for_onednn()
    int8 = [Int8Linear(layer) for layer in linears]
    onednn = torch.ops.mkldnn._linear_pointwise
    table = {
        "F.linear fp32 (MKL)": (4, [lambda x, w=w: F.linear(x, w) for w in weights]),
        "oneDNN fp32, plain weights": (4, [lambda x, w=w: onednn(x, w, None, "none", [], "") for w in weights]),
        "oneDNN fp32, packed weights": (4, [lambda x, w=w: onednn(x, w, None, "none", [], "") for w in packed]),
        "q3embed Linear fp32": (4, list(linears)),
        "F.linear bf16": (2, [lambda x, w=w: F.linear(x.bfloat16(), w) for w in bf16]),
        "q3embed Linear bf16 (packed)": (2, [lambda x, layer=layer: layer(x.bfloat16()) for layer in packed_bf16]),
        "Int8Linear (fbgemm, per token)": (1, list(int8)),
    }
    if cpu_kernels_available():  # q3embed's kernels: bf16 tiles; Q8_0 blocks as llama.cpp's quantizer makes them
        tiles = [pack_tiles(w) for w in bf16]
        table["q3embed kernel bf16 (tiles)"] = (2, [lambda x, w=w: bf16_linear(x.bfloat16(), w) for w in tiles])
        huge = in_huge_pages(tiles)  # where the engine keeps a CPU model's weights (engine/memory.py)
        if huge is not None:
            table["q3embed kernel bf16, 2 MB pages"] = (2, [lambda x, w=w: bf16_linear(x.bfloat16(), w) for w in huge])
        q8 = [Q8Linear.from_blocks(*quantize_q8_0(w)) for w in weights]
        table["Q8Linear (Q8_0 blocks)"] = (34 / 32, [lambda x, layer=layer: layer(x.bfloat16()) for layer in q8])
        q8_int8 = [layer.with_int8_inputs() for layer in q8]  # quantize="int8": inputs quantized to Q8_0
        table["Q8Linear, Q8_0 inputs"] = (34 / 32, [lambda x, layer=layer: layer(x.bfloat16()) for layer in q8_int8])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"CPU flags: {wanted_flags()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.2f}")
    table = kernels(args.matrices)
    print(f"{'kernel':32s}" + "".join(f"{rows:>16d}" for rows in ROWS) + "   (rows: ms per product, GB/s of weights)")
    with torch.inference_mode():
        for name, (element_bytes, products) in table.items():
            cells = []
            for rows in ROWS:
                x = torch.randn(rows, IN)
                ms = median_seconds(lambda: [product(x) for product in products], args.rounds) * 1e3 / len(products)
                cells.append(f"{ms:8.2f} {OUT * IN * element_bytes / ms / 1e6:5.1f}G")
            print(f"{name:32s}" + "".join(f"{cell:>16s}" for cell in cells), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
