"""q3embed's CPU kernels (csrc/block_linear.cpp) for AVX512-BF16: linear layers over weights packed
in tiles of 32 outputs, kept as GGUF's Q8_0 blocks (`Q8Linear`) or as bf16 (model/linear.py's
`Linear.pack_for_kernel`).

A Q8_0 file holds each weight as int8 values with one fp16 scale per 32 inputs (1.06 bytes a
weight). Expanded to bf16 at load, the model holds and streams twice that. Kept as blocks, it
holds about the file's size, and the kernel expands each tile into L2 as it streams it and
multiplies it there with AVX512-BF16 dot products: the int8 bytes are read once, so the few-row
products of an interactive query run faster than bf16 ones, batches about as fast
(bench/linear_kernels.py, bench/quantized.py, docs/benchmarks.md). The values are those of the
dequantized model: each d x q is rounded to bf16 as loading the file into bf16 does, and summed in
fp32. The bf16 kernel is the same loop without the expansion; for 1-64 rows it beats oneDNN's.

The kernels are compiled on first use with the system's C++ compiler and ninja (torch's
cpp_extension, ~15 s once, cached under ~/.cache/q3embed). `cpu_kernels_available()`: they run
here (AVX512-BF16, built); `cpu_kernels_preferred()`: the engine uses them, which it does where
they run and the CPU has no AMX (with AMX, oneDNN's tile products are several times faster for
batches, and these kernels were not measured there). Where not preferred, Q8_0 files are
dequantized to bf16 and bf16 weights packed for oneDNN, as before; why is logged once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["Q8Linear", "cpu_flags", "cpu_kernels_available", "cpu_kernels_preferred", "cpu_kernels_run",
           "quantize_q8_0", "pack_tiles", "pack_int8_input_tiles", "unpack_tiles",
           "unpack_int8_input_tiles", "tiles_fit", "Q8_BLOCK", "TILE"]

log = logging.getLogger("q3embed")

Q8_BLOCK = 32  # inputs per Q8_0 block (GGUF's QK8_0)
TILE = 32  # outputs per kernel tile: out_features must be a multiple
# the linear layers, and the decoder's other operations (RMSNorm, q/k norm + RoPE, attention)
_SOURCES = tuple(Path(__file__).with_name("csrc") / name for name in ("block_linear.cpp", "decoder_ops.cpp"))
_HEADERS = (Path(__file__).with_name("csrc") / "simd.h",)  # the helpers both include
_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni")
# -ffp-contract=off: no multiply and add fused into one rounding where torch rounds twice
_COMPILE_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx512vnni", "-fopenmp", "-ffp-contract=off"]
DEFAULT_BUILD_ROOT = Path.home() / ".cache" / "q3embed" / "kernels"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo; none where it cannot be read)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return frozenset()


@functools.cache
def cpu_kernels_available(build_root: Path = DEFAULT_BUILD_ROOT) -> bool:
    """Whether the kernels run here: an x86 CPU with AVX512-BF16 and the extension built (on the
    first call, into `build_root`); why not is logged once."""
    missing = [flag for flag in _CPU_FLAGS if flag not in cpu_flags()]
    if missing:
        log.info("q3embed's CPU kernels off: this CPU lacks %s", ", ".join(missing))
        return False
    from torch.utils import cpp_extension

    directory = build_root / f"torch-{torch.__version__}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(name="q3embed_cpu", sources=[str(source) for source in _SOURCES],
                           extra_cflags=[*_COMPILE_FLAGS, f"-DQ3EMBED_HEADERS={_headers_digest()}"],
                           extra_ldflags=["-fopenmp"], build_directory=str(directory),
                           is_python_module=False, verbose=False)
    except Exception as error:  # no compiler, no ninja, a read-only home: fall back, say why
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        log.warning("q3embed's CPU kernels off: building %s failed (%s); oneDNN runs the bf16 products and "
                    "Q8_0 files are dequantized to bf16. The kernels need a C++ compiler and ninja "
                    "(apt-get install g++ ninja-build).", ", ".join(source.name for source in _SOURCES), reason)
        return False
    _register_fake()
    return True


def _headers_digest() -> str:
    """A digest of the headers the sources include: cpp_extension rebuilds when the sources or the
    flags change, not the headers, so the digest goes into the flags."""
    digest = hashlib.sha256()
    for header in _HEADERS:
        digest.update(header.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def cpu_kernels_preferred() -> bool:
    """Whether the engine runs its CPU linear layers on these kernels: where they run and the CPU
    has no AMX (see the module docstring)."""
    if "amx_bf16" in cpu_flags():
        log.info("q3embed's CPU kernels not used: this CPU has AMX, whose oneDNN products are faster")
        return False
    return cpu_kernels_available()


def cpu_kernels_run(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the engine runs a model of `dtype` on `device` on these kernels: bf16 on a CPU where
    they are preferred (the one rule the GGUF loader, quantize="int8" and the bf16 packing share)."""
    return dtype == torch.bfloat16 and device.type == "cpu" and cpu_kernels_preferred()


def tiles_fit(out_features: int, in_features: int) -> bool:
    """Whether the kernels take a weight [out, in]: whole tiles and whole Q8_0 blocks."""
    return out_features % TILE == 0 and in_features % Q8_BLOCK == 0


def pack_tiles(weight: Tensor) -> Tensor:
    """[out, in] (any dtype) -> the kernels' order [out/32, in/2, 32, 2]: per tile and input pair,
    its 32 outputs x 2 inputs."""
    out_features, in_features = weight.shape
    return weight.reshape(out_features // TILE, TILE, in_features // 2, 2).permute(0, 2, 1, 3).contiguous()


def pack_int8_input_tiles(q: Tensor) -> Tensor:
    """Q8_0 values q int8 [out, in] -> the int8-input kernel's order (q3embed_cpu::q8_linear_int8)
    uint8 [out/32, in/4, 32, 4]: per tile and input quad, its 32 outputs x 4 inputs, each q + 128
    (vpdpbusd multiplies unsigned bytes by signed ones; the kernel takes the 128 back out)."""
    out_features, in_features = q.shape
    shifted = q.view(torch.uint8) ^ 0x80  # the bits of q + 128
    return shifted.reshape(out_features // TILE, TILE, in_features // 4, 4).permute(0, 2, 1, 3).contiguous()


def unpack_tiles(tiles: Tensor) -> Tensor:
    """pack_tiles' inverse: [out/32, in/2, 32, 2] -> [out, in]."""
    return tiles.permute(0, 2, 1, 3).reshape(tiles.shape[0] * TILE, tiles.shape[1] * 2)


def unpack_int8_input_tiles(tiles: Tensor) -> Tensor:
    """pack_int8_input_tiles' inverse: uint8 [out/32, in/4, 32, 4] -> q int8 [out, in]."""
    shifted = tiles.permute(0, 2, 1, 3).reshape(tiles.shape[0] * TILE, tiles.shape[1] * 4)
    return (shifted ^ 0x80).view(torch.int8)


def _register_fake() -> None:
    """Shapes for torch.compile's tracing (compile="max" graphs call the kernels as opaque ops)."""
    @torch.library.register_fake("q3embed_cpu::q8_linear")
    def _q8(x: Tensor, values: Tensor, scales: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], values.shape[0] * TILE))

    @torch.library.register_fake("q3embed_cpu::bf16_linear")
    def _bf16(x: Tensor, weights: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], weights.shape[0] * TILE))

    @torch.library.register_fake("q3embed_cpu::q8_linear_swiglu")
    def _q8_swiglu(x: Tensor, values: Tensor, scales: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], values.shape[0] // 2 * TILE))

    @torch.library.register_fake("q3embed_cpu::q8_linear_int8")
    def _q8_int8(x: Tensor, values: Tensor, scales: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], values.shape[0] * TILE))

    @torch.library.register_fake("q3embed_cpu::q8_linear_int8_swiglu")
    def _q8_int8_swiglu(x: Tensor, values: Tensor, scales: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], values.shape[0] // 2 * TILE))

    @torch.library.register_fake("q3embed_cpu::bf16_linear_swiglu")
    def _bf16_swiglu(x: Tensor, weights: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], weights.shape[0] // 2 * TILE))

    @torch.library.register_fake("q3embed_cpu::rms_norm")
    def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
        return x.new_empty(x.shape)

    @torch.library.register_fake("q3embed_cpu::add_rms_norm")
    def _add_rms_norm(x: Tensor, added: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        return x.new_empty(x.shape), x.new_empty(x.shape)

    @torch.library.register_fake("q3embed_cpu::norm_rope")
    def _norm_rope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps: float) -> Tensor:
        return x.new_empty(x.shape)

    @torch.library.register_fake("q3embed_cpu::causal_attention")
    def _attention(q: Tensor, k: Tensor, v: Tensor, seq_lens: list[int], last_only: bool,
                   prefix_k: Tensor | None = None, prefix_v: Tensor | None = None) -> Tensor:
        return q.new_empty(q.shape)


def quantize_q8_0(weight: Tensor) -> tuple[Tensor, Tensor]:
    """weight [out, in] -> Q8_0 blocks as llama.cpp makes them (quantize_row_q8_0_ref): per 32
    inputs d = max |w| / 127, q = round(w / d) in int8 with that fp32 d, d kept as fp16.
    -> q int8 [out, in], d fp16 [out, in / 32]."""
    out_features, in_features = weight.shape
    blocks = weight.detach().float().view(out_features, in_features // Q8_BLOCK, Q8_BLOCK)
    d = blocks.abs().amax(dim=-1) / 127  # [out, in / 32]
    scaled = blocks * torch.where(d > 0, 1 / d, torch.zeros_like(d)).unsqueeze(-1)
    rounded = scaled.sign() * (scaled.abs() + 0.5).floor()  # C's roundf: halves away from zero
    q = rounded.clamp(-127, 127).to(torch.int8).view(out_features, in_features)
    return q, d.half()


class Q8Linear(nn.Module):
    """nn.Linear without bias whose weight [out, in] is Q8_0 blocks (values int8, scales fp32 [out/32,
    in/32, 32]), packed for one of two kernels (csrc/block_linear.cpp), inputs and outputs bf16, on a
    CPU where cpu_kernels_available():
    - bf16 inputs (q8_linear; values int8 [out/32, in/2, 32, 2]): the dequantized model's values, as
      a Q8_0 file loads by default;
    - int8 inputs (q8_linear_int8; values uint8 q + 128 [out/32, in/4, 32, 4]): each row of x is
      quantized to Q8_0 blocks as llama.cpp does it and multiplied in int8 (quantize="int8": faster
      at every row count, an approximation whose cosine is reported)."""

    def __init__(self, values: Tensor, scales: Tensor) -> None:
        super().__init__()
        self.int8_inputs = values.dtype == torch.uint8  # the layout says which kernel takes it
        inputs_per_lane = 4 if self.int8_inputs else 2
        self.out_features, self.in_features = values.shape[0] * TILE, values.shape[1] * inputs_per_lane
        self.register_buffer("values", values)  # [out/32, in/2, 32, 2] int8 or [out/32, in/4, 32, 4] uint8
        self.register_buffer("scales", scales)  # [out/32, in/32, 32] fp32

    @classmethod
    def from_blocks(cls, q: Tensor, d: Tensor, int8_inputs: bool = False) -> Q8Linear:
        """q int8 [out, in] and d [out, in/32] (any float dtype; a file's fp16) -> the packed layer,
        for int8 inputs or bf16 ones."""
        out_features, in_features = q.shape
        if not tiles_fit(out_features, in_features) or d.shape != (out_features, in_features // Q8_BLOCK):
            raise ValueError(f"Q8_0 blocks [{out_features}, {in_features}] need out % {TILE} == 0 and "
                             f"in % {Q8_BLOCK} == 0, scales [{out_features}, {in_features // Q8_BLOCK}]")
        tiles = out_features // TILE
        scales = d.float().view(tiles, TILE, in_features // Q8_BLOCK).permute(0, 2, 1).contiguous()
        return cls(pack_int8_input_tiles(q) if int8_inputs else pack_tiles(q), scales)

    @classmethod
    def quantized(cls, linear: nn.Linear, int8_inputs: bool = False) -> Q8Linear:
        """A bias-free `linear`'s weight in Q8_0 blocks (quantize="int8" where the kernel runs)."""
        if linear.bias is not None:
            raise ValueError("Q8Linear has no bias")
        return cls.from_blocks(*quantize_q8_0(linear.weight), int8_inputs=int8_inputs)

    @classmethod
    def concatenated(cls, parts: list[Q8Linear]) -> Q8Linear:
        """One layer computing what `parts` (same input, same layout) compute, their outputs laid end
        to end."""
        if len({p.int8_inputs for p in parts}) > 1:
            raise ValueError("Q8Linear parts to concatenate take inputs of different types")
        return cls(torch.cat([p.values for p in parts]), torch.cat([p.scales for p in parts]))

    def with_int8_inputs(self) -> Q8Linear:
        """The same blocks, packed for int8 inputs (self where they are)."""
        return self if self.int8_inputs else Q8Linear.from_blocks(*self.blocks(), int8_inputs=True)

    def blocks(self) -> tuple[Tensor, Tensor]:
        """The unpacked (q int8 [out, in], d fp32 [out, in/32])."""
        q = unpack_int8_input_tiles(self.values) if self.int8_inputs else unpack_tiles(self.values)
        d = self.scales.permute(0, 2, 1).reshape(self.out_features, self.in_features // Q8_BLOCK)
        return q, d

    def dequantized_weight(self, dtype: torch.dtype = torch.bfloat16) -> Tensor:
        """[out, in] in `dtype`: d x q in fp32, then rounded, as the file's bf16 load rounds it."""
        q, d = self.blocks()
        blocks = q.float().view(self.out_features, -1, Q8_BLOCK) * d.unsqueeze(-1)
        return blocks.view(self.out_features, self.in_features).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        kernel = torch.ops.q3embed_cpu.q8_linear_int8 if self.int8_inputs else torch.ops.q3embed_cpu.q8_linear
        if x.dim() == 2:  # the decoder's [T, in]: no reshaping (~2 us a call, 112 calls a forward pass)
            return kernel(x, self.values, self.scales)
        out = kernel(x.reshape(-1, self.in_features), self.values, self.scales)  # [rows, out] bf16
        return out.view(*x.shape[:-1], self.out_features)

    def swiglu(self, x: Tensor) -> Tensor:
        """For a fused [gate; up] layer: silu(x Wg^T) * (x Wu^T) in one pass, the same values as
        forward then silu_mul. x bf16 [..., in] -> [..., out/2]."""
        rows = x.reshape(-1, self.in_features)
        kernel = (torch.ops.q3embed_cpu.q8_linear_int8_swiglu if self.int8_inputs
                  else torch.ops.q3embed_cpu.q8_linear_swiglu)
        out = kernel(rows, self.values, self.scales)  # [rows, out/2] bf16
        return out.view(*x.shape[:-1], self.out_features // 2)

    def extra_repr(self) -> str:
        inputs = "int8" if self.int8_inputs else "bf16"
        return f"in_features={self.in_features}, out_features={self.out_features}, Q8_0 blocks, {inputs} inputs"
