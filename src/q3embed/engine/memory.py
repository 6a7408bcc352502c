"""Memory a process freed, given back to the system.

glibc keeps what a process frees on its heap for reuse, and after a large block is freed it
raises its threshold for serving blocks from their own mappings, so the next ones come from the
heap too. Loading a model frees gigabytes that way (a checkpoint read into fp32 and quantized to
int8, a GGUF dequantized in slices): measured on the 0.6B model with quantize=int8, 3.08 GB
resident after loading and 1.36 GB once the heap is trimmed (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_freed_memory"]


@functools.cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Trim glibc's heap (malloc_trim(0)); -> False where the C library has no such call (musl,
    macOS), where there is nothing to do."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)  # type: ignore[operator]
    return True
