"""The decoder's elementwise kernels: RMSNorm (alone, and with the residual add before it), and
the per-head RMSNorm + RoPE of q and k.

Numerics are the reference's (transformers' Qwen3): the variance in fp32, cast back to the input
dtype before the weight multiply; RoPE in fp32 on an fp32 copy, cast back at the end.

Eager torch runs these as a dozen passes over [T, heads, head_dim] temporaries; on 2 CPU cores
that was ~18% of a bf16 forward (84 ms of q/k norm + RoPE per layer at 4,096 tokens, against
~350 ms of matrix products). `torch.compile` fuses each function into one loop (Inductor's C++
backend on CPU): 22 ms, and the whole forward ~12% faster (bench/embedding.py, interleaved runs).
`emulate_precision_casts` keeps the intermediate bf16 roundings the reference performs, so
compiled and eager agree bit for bit but for rare last-bit flips of an fp32 reduction order
(measured: 2 in a million bf16 values; fp32 within 1e-6). SwiGLU's silu(gate) * up stays eager:
fused, it would skip the bf16 rounding of silu's output that the reference performs.

`EAGER` is the plain version; `compiled_kernels()` falls back to it for good if compilation
fails (no C++ compiler, an unsupported platform). `CPU_NATIVE` runs each function as one call of
q3embed's own kernels (csrc/decoder_ops.cpp) on bf16 where they run (model.block_linear's
`cpu_kernels_run`), SwiGLU included: the same values but for the order of one fp32 sum and a
rare last-bit flip of silu (its own e^x), without a compile, and at 13 tokens 1.2-8x faster than
eager (RMSNorm 2.3x, q/k norm + RoPE 8.3x, SwiGLU 1.2x: per-call overhead, not arithmetic, is what
a short query pays; bench/decoder_ops.py); with the MLP's gate and up in one projection, SwiGLU
runs inside that product (`gate_up_swiglu`: its [T, 2 x intermediate] output is never written);
`KernelSchedule.for_model` picks it there instead of the compiled set. The residual add and the
RMSNorm after it are one call there too (`add_rms_norm`; a layer's two adds each go with the norm
that reads them, model.qwen3): the same values as the add then the norm, two calls fewer a layer
(a 13-token int8 query 26.1 -> 25.7 ms, 5 interleaved pairs; docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block_linear import Q8Linear, cpu_kernels_run
from .linear import Linear

__all__ = ["Kernels", "EAGER", "CPU_NATIVE", "compiled_kernels", "can_compile", "rms_norm", "add_then_rms_norm",
           "apply_rope", "norm_rope", "swiglu", "gate_up_swiglu", "KernelSchedule"]

log = logging.getLogger(__name__)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x [..., dim] -> [..., dim] in x's dtype."""
    # A copy even for fp32 input, which is then scaled in place (eager: one temporary less).
    x32 = x.to(torch.float32, copy=True)
    x32.mul_(torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))
    return weight * x32.to(x.dtype)


def add_then_rms_norm(norm: Callable[[Tensor, Tensor, float], Tensor], x: Tensor, added: Tensor, weight: Tensor,
                      eps: float) -> tuple[Tensor, Tensor]:
    """The residual add and the RMSNorm after it, as two calls: x, added [T, dim] ->
    (x + added, norm(x + added)), the sum in x's dtype (normed from its rounded values)."""
    total = x + added
    return total, norm(total, weight, eps)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [T, heads, head_dim] rotated in fp32 (cos/sin [T, head_dim]), returned in x's dtype.

    The reference's x * cos + rotate_half(x) * sin, computed in place on fp32 copies: the same
    values bit for bit, with two [T, heads, head_dim] fp32 temporaries instead of five.
    """
    x32 = x.to(torch.float32, copy=True)
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    rotated.mul_(sin[:, None, :])
    return x32.mul_(cos[:, None, :]).add_(rotated).to(x.dtype)


def norm_rope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps: float) -> Tensor:
    """Qwen3's q_norm / k_norm (per head) then RoPE: x [T, heads, head_dim] -> same shape."""
    return apply_rope(rms_norm(x, weight, eps), cos, sin)


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """The MLP's silu(gate) * up: [T, intermediate] each -> [T, intermediate]."""
    return F.silu(gate) * up


def gate_up_swiglu(gate_up: nn.Module, x: Tensor) -> Tensor:
    """swiglu of a fused [gate; up] projection (its output's two halves): x [T, hidden] ->
    [T, intermediate]."""
    gate, up = gate_up(x).chunk(2, dim=-1)
    return swiglu(gate, up)


@dataclass(frozen=True)
class Kernels:
    rms_norm: Callable[[Tensor, Tensor, float], Tensor]
    norm_rope: Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]
    swiglu: Callable[[Tensor, Tensor], Tensor] = swiglu  # compiled sets keep it eager (see above)
    # the MLP with fused projections: (gate_up layer, x) -> swiglu of its two halves
    gate_up_swiglu: Callable[[nn.Module, Tensor], Tensor] = gate_up_swiglu
    # (x, added, weight, eps) -> (x + added, its RMSNorm); None: the add, then this set's rms_norm
    add_rms_norm: Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]] | None = None

    def __post_init__(self) -> None:
        if self.add_rms_norm is None:  # frozen: set once, here
            object.__setattr__(self, "add_rms_norm", functools.partial(add_then_rms_norm, self.rms_norm))


EAGER = Kernels(rms_norm, norm_rope)


def _native_takes(x: Tensor, weight: Tensor) -> bool:
    """What the native kernels take: bf16 on the CPU, rows of whole 32-value vectors."""
    return (x.dtype == weight.dtype == torch.bfloat16 and x.device.type == "cpu" and x.shape[-1] % 32 == 0
            and x.stride(-1) == 1)


def native_rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """rms_norm as one call of q3embed_cpu::rms_norm where it takes x, else eagerly."""
    if not _native_takes(x, weight) or weight.dim() != 1:
        return rms_norm(x, weight, eps)
    if x.dim() == 2:  # the decoder's [T, hidden]: no reshaping
        return torch.ops.q3embed_cpu.rms_norm(x, weight, eps)
    return torch.ops.q3embed_cpu.rms_norm(x.reshape(-1, x.shape[-1]), weight, eps).view(x.shape)


def native_add_rms_norm(x: Tensor, added: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The residual add and RMSNorm as one call of q3embed_cpu::add_rms_norm (x, added [T, dim])
    where it takes them, else the add and native_rms_norm: the same values either way."""
    if not _native_takes(x, weight) or not _native_takes(added, weight) or x.dim() != 2 or x.shape != added.shape:
        return add_then_rms_norm(native_rms_norm, x, added, weight, eps)
    return torch.ops.q3embed_cpu.add_rms_norm(x, added, weight, eps)


def native_norm_rope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps: float) -> Tensor:
    """norm_rope as one call of q3embed_cpu::norm_rope (x [T, heads, d] whose heads are contiguous
    rows, e.g. a view into a fused projection's output) where it takes x, else eagerly."""
    if not _native_takes(x, weight) or x.dim() != 3 or x.stride(1) != x.shape[2] or not weight.is_contiguous():
        return norm_rope(x, weight, cos, sin, eps)
    return torch.ops.q3embed_cpu.norm_rope(x, weight, cos.contiguous(), sin.contiguous(), eps)


def native_swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """swiglu as one call of q3embed_cpu::silu_mul (gate and up may be the two halves of one
    fused projection's output) where it takes them, else eagerly."""
    if not _native_takes(gate, up) or gate.dim() != 2 or up.stride(-1) != 1 or gate.shape != up.shape:
        return swiglu(gate, up)
    return torch.ops.q3embed_cpu.silu_mul(gate, up)


def native_gate_up_swiglu(gate_up: nn.Module, x: Tensor) -> Tensor:
    """gate_up_swiglu as one call of q3embed_cpu::bf16_linear_swiglu / q8_linear[_int8]_swiglu (the
    products and silu(gate) * up in one pass, the same values as the two calls) where gate_up's
    weights are the kernels' tiles or Q8_0 blocks, without bias, and x is bf16; else the product,
    then native_swiglu."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        rows = x.reshape(-1, x.shape[-1])  # [..., hidden] -> [rows, hidden]: the kernels are 2-D
        if isinstance(gate_up, Linear) and gate_up.tiled and gate_up.bias is None:
            out = torch.ops.q3embed_cpu.bf16_linear_swiglu(rows, gate_up.weight)
            return out.view(*x.shape[:-1], out.shape[-1])
        if isinstance(gate_up, Q8Linear):
            return gate_up.swiglu(x)
    gate, up = gate_up(x).chunk(2, dim=-1)
    return native_swiglu(gate, up)


CPU_NATIVE = Kernels(native_rms_norm, native_norm_rope, native_swiglu, native_gate_up_swiglu, native_add_rms_norm)


class _CompiledOrEager:
    """A compiled function that turns into its eager original on its first failure (the inputs
    are untouched by a failed compile, so the same call is answered eagerly)."""

    def __init__(self, eager: Callable[..., Tensor]) -> None:
        self.eager = eager
        # dynamic=None, torch's automatic dynamic shapes: the first shape compiles static, the next
        # one recompiles with only the sizes that changed symbolic (the token count), so head_dim and
        # hidden stay constants the C++ loops are specialised to. dynamic=True made every size
        # symbolic: norm_rope at 2,047 tokens 8.5 against 6.1 ms, at 13 tokens 147 against 90 us.
        self.compiled = torch.compile(eager, dynamic=None, options={"emulate_precision_casts": True})
        self.failed = False
        self.lock = threading.Lock()

    def __call__(self, *args: object) -> Tensor:
        if torch.compiler.is_compiling():  # inside a whole-model graph (model.graphs): trace the original
            return self.eager(*args)
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
                with self.lock:
                    if not self.failed:
                        log.warning("torch.compile of %s failed, running it eagerly: %s",
                                    self.eager.__name__, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    self.failed = True
        return self.eager(*args)


def can_compile(device: torch.device) -> bool:
    """Inductor needs a C++ compiler on CPU (and Triton on CUDA, which CUDA builds of torch carry)."""
    if device.type == "cpu":
        return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    return device.type == "cuda"


@functools.cache
def compiled_kernels() -> Kernels:
    """One set per process: every model shares the compiled code (the token count is dynamic
    after a model's second length; a model of other sizes adds a compile of its own)."""
    return Kernels(_CompiledOrEager(rms_norm), _CompiledOrEager(norm_rope))


class KernelSchedule:
    """`first` kernels (eager) until a model has run `after_tokens` tokens, compiled from then on
    (None: never). Call `count` before each forward pass; `compile_now` for a warm-up."""

    def __init__(self, model: torch.nn.Module, after_tokens: int | None, first: Kernels = EAGER) -> None:
        self.model, self.after_tokens, self.seen = model, after_tokens, 0
        self.compiled = False
        model.use_kernels(first)  # type: ignore[operator]
        self.count(0)

    @classmethod
    def for_model(cls, model: torch.nn.Module, after_tokens: int | None, dtype: torch.dtype,
                  device: torch.device) -> KernelSchedule:
        """The native kernels for good where q3embed's CPU kernels run (nothing to compile), else
        eager then compiled after `after_tokens`."""
        if cpu_kernels_run(dtype, device):
            return cls(model, None, CPU_NATIVE)
        return cls(model, after_tokens)

    def count(self, tokens: int) -> None:
        self.seen += tokens
        if not self.compiled and self.after_tokens is not None and self.seen >= self.after_tokens:
            self.model.use_kernels(compiled_kernels())  # type: ignore[operator]
            self.compiled = True

    def compile_now(self) -> bool:
        """Switch now if compiling is allowed at all (the next forward pass compiles); whether it is."""
        if self.after_tokens is not None:
            self.after_tokens = 0
            self.count(0)
        return self.compiled
