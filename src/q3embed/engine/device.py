"""Device and dtype choice: bf16 only where the hardware runs it fast, fp32 elsewhere."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..errors import ConfigurationError

__all__ = ["resolve_device", "resolve_dtype", "cpu_has_fast_bf16", "dtype_name", "DTYPE_NAMES"]

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


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
