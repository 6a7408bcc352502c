"""Device and dtype choice: bf16 only where the hardware runs it fast, fp32 elsewhere."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigurationError
from .options import COMPILE_MODES

if TYPE_CHECKING:
    from .options import ModelOptions

__all__ = ["resolve_device", "resolve_dtype", "cpu_has_fast_bf16", "dtype_name", "DTYPE_NAMES", "usable_cpus",
           "set_cpu_threads", "COMPILE_MODES", "AUTO_COMPILE_AFTER_TOKENS", "resolve_compile", "resolve_graphs",
           "resolve_attention", "resolve_quantize", "gpu_batch_tokens", "Placement", "place"]

DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AMX or AVX512-BF16).

    Without these, PyTorch emulates bf16 matrix products and they run ~3x *slower* than fp32
    (measured on an AVX512 Cascade Lake core), so `auto` must not pick bf16 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigurationError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N ({exc})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} was asked for, but this PyTorch sees no CUDA GPU")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigurationError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigurationError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_NAMES.values():
            raise ConfigurationError(f"dtype {dtype} is not supported: use float32, bfloat16 or float16")
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    try:
        return DTYPE_NAMES[str(dtype).lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown dtype {dtype!r}: use auto, float32 (fp32), bfloat16 (bf16) or float16 (fp16)"
        ) from None


# auto compiles once a model has run this many tokens: a one-shot command never pays the compile
# (3-5 s with a warm on-disk cache, ~16 s cold, 0.6B on 2 cores), a long job earns it back in about
# a minute at ~12% faster, and a server compiles at start-up (Engine.start), before any request.
AUTO_COMPILE_AFTER_TOKENS = 16_384


def resolve_compile(mode: str, device: torch.device) -> int | None:
    """After how many tokens the decoder's elementwise kernels switch to torch.compile (see
    model.kernels): 0 = from the start (on), None = never (off, or auto where it cannot or was
    not measured to pay: no C++ compiler, CUDA), else AUTO_COMPILE_AFTER_TOKENS (auto)."""
    from ..model.kernels import can_compile

    chosen = str(mode).strip().lower()
    if chosen not in COMPILE_MODES:
        raise ConfigurationError(f"unknown compile mode {mode!r}: use auto, on, off or max")
    if chosen in ("on", "max"):
        return 0
    if chosen == "auto" and device.type == "cpu" and can_compile(device):
        return AUTO_COMPILE_AFTER_TOKENS
    return None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may really use: its affinity mask, capped by a container's CPU quota.

    torch sizes its pool from the machine's cores; in a container limited to 2 CPUs on a 64-core
    host that means 64 threads fighting over 2 CPUs, which is many times slower.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def set_cpu_threads(threads: int | None = None) -> int:
    """Size torch's CPU thread pool: every usable CPU and no more (or `threads` when given)."""
    if threads is not None and threads < 1:
        raise ConfigurationError(f"threads must be a positive integer, got {threads}")
    count = threads or usable_cpus()
    torch.set_num_threads(count)
    return count


@dataclass(frozen=True)
class Placement:
    """Where and how a model runs, resolved from its options once, before any file is read."""

    device: torch.device
    dtype: torch.dtype
    compile_after: int | None  # see resolve_compile
    max_batch_tokens: int | None  # the options' value; None: sized for the device once the model is loaded
    graphs: str | None = None  # "inductor", "cuda" or None: the short-sequence graphs (model.graphs)
    attention: str = "auto"  # model.attention.choose_attention's choice
    quantize: str = "none"  # "int8": the decoder's linear layers as int8 products (model.quantized)
    huge_pages: bool = False  # move the decoder's weights into 2 MB pages (a CPU, asked for)

    def batch_tokens(self, per_token_bytes: int) -> int:
        """The token budget of one forward pass: the options' value, CPU_BATCH_TOKENS on a CPU,
        and on a GPU what its free memory holds (call it once the weights are on the device)."""
        from .options import CPU_BATCH_TOKENS

        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        if self.device.type != "cuda":
            return CPU_BATCH_TOKENS
        free, _ = torch.cuda.mem_get_info(self.device)
        return gpu_batch_tokens(free, per_token_bytes)


def gpu_batch_tokens(free_bytes: int, per_token_bytes: int) -> int:
    """Tokens per forward pass on a GPU: the activations of a batch in at most a third of the
    memory free after loading (the rest stays for the allocator's slack, the graphs' pool and
    other processes), in steps of 1,024, between GPU_MIN_BATCH_TOKENS and GPU_MAX_BATCH_TOKENS
    (past that a batch only takes longer, and a short request waits behind it)."""
    from .options import GPU_MAX_BATCH_TOKENS, GPU_MIN_BATCH_TOKENS

    fits = free_bytes // 3 // max(per_token_bytes, 1) // 1024 * 1024
    return max(GPU_MIN_BATCH_TOKENS, min(GPU_MAX_BATCH_TOKENS, fits))


def resolve_graphs(mode: str, device: torch.device) -> str | None:
    """Which short-sequence graphs a model gets (model.graphs): CUDA graphs on a GPU unless
    compile="off"; Inductor graphs on a CPU with compile="max" and a C++ compiler; else none."""
    from ..model.kernels import can_compile

    chosen = str(mode).strip().lower()
    if device.type == "cuda":
        return None if chosen == "off" else "cuda"
    return "inductor" if chosen == "max" and can_compile(device) else None


def resolve_attention(choice: str, device: torch.device, dtype: torch.dtype) -> str:
    """The options' attention, checked now (before any loading): sdpa, varlen or cpu-kernel."""
    from ..model.attention import choose_attention

    try:
        return choose_attention(str(choice).strip().lower(), device, dtype).name
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def resolve_quantize(mode: str, device: torch.device, compile_mode: str) -> str:
    """int8 runs on the CPU (q3embed's Q8_0 kernels or fbgemm's): refused on a GPU, beside
    compile="max" (its frozen graphs take plain weights) and where this torch has no x86 quantized
    engine (fbgemm is the fallback wherever q3embed's kernels do not run)."""
    if mode == "none":
        return mode
    if device.type != "cpu":
        raise ConfigurationError("quantize=int8 is for CPUs; on a GPU use bf16 or fp16 (the default)")
    if str(compile_mode).strip().lower() == "max":
        raise ConfigurationError("quantize=int8 and compile=max do not combine: pick one for short queries")
    if not {"fbgemm", "x86"} & set(torch.backends.quantized.supported_engines):
        raise ConfigurationError(f"quantize=int8 needs fbgemm (x86 CPUs); this torch has "
                                 f"{', '.join(torch.backends.quantized.supported_engines)}")
    return mode


def place(options: "ModelOptions") -> Placement:
    """Resolve device, dtype, compile mode and attention (a bad value fails before any loading)
    and size torch's CPU thread pool for a model that runs on the CPU."""
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    placement = Placement(device, dtype, resolve_compile(options.compile, device), options.max_batch_tokens,
                          graphs=resolve_graphs(options.compile, device),
                          attention=resolve_attention(options.attention, device, dtype),
                          quantize=resolve_quantize(options.quantize, device, options.compile),
                          huge_pages=options.huge_pages and device.type == "cpu")
    if device.type == "cpu":
        set_cpu_threads(options.threads)
    return placement
