"""The memory a model's weights live in: freed memory given back to the system, and the weights a
forward pass streams moved into huge pages.

glibc keeps what a process frees on its heap for reuse, and after a large block is freed it
raises its threshold for serving blocks from their own mappings, so the next ones come from the
heap too. Loading a model frees gigabytes that way (a checkpoint read into fp32 and quantized to
int8, a GGUF dequantized in slices): measured on the 0.6B model with quantize=int8, 3.08 GB
resident after loading and 1.36 GB once the heap is trimmed (docs/benchmarks.md).

A forward pass of a few tokens streams every weight of the decoder from memory once, and on 4 KB
pages that is a TLB miss every 4 KB, and the hardware prefetchers stop at each page's end. Linux
backs a mapping with 2 MB pages when asked (madvise(MADV_HUGEPAGE), the "madvise" setting most
distributions ship for transparent huge pages); torch's allocator does not ask. The decoder's
weights are moved into one such mapping: on a 2-core Zen 4, bf16 products of 1-27 rows over the
0.6B model's weights streamed 4-11% faster (bench/linear_kernels.py, docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import mmap

import torch
from torch import nn

__all__ = ["HUGE_PAGE", "HugePageArena", "huge_page_arena", "huge_page_buffer", "release_freed_memory",
           "weights_in_huge_pages"]

HUGE_PAGE = 2 << 20  # x86-64's and most arm64 kernels' transparent huge page
_SMALLEST_MOVED = 4 << 10  # under one 4 KB page (a norm's weight): no TLB entry to save
_TRIM_EVERY = 64 << 20  # bytes moved between trims: the copies' peak stays at most this above the model


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


def _movable(tensor: torch.Tensor) -> bool:
    """A dense CPU tensor (not oneDNN's opaque packed weights) big enough to be worth moving, that
    is the whole of its storage (not a view, whose moving would part it from what it views)."""
    nbytes = tensor.numel() * tensor.element_size()
    return (tensor.device.type == "cpu" and tensor.layout == torch.strided and not tensor.is_mkldnn
            and nbytes >= _SMALLEST_MOVED and tensor.is_contiguous()
            and tensor.untyped_storage().nbytes() == nbytes and tensor.storage_offset() == 0)


class HugePageArena:
    """An anonymous mapping of `nbytes` (rounded up to whole huge pages, and one of slack), advised
    for huge pages, whose usable part starts on one. Tensors cut from it each have a storage of their own (no aliasing
    storage shared by several parameters, which torch.compile's freezing or a state dict would
    have to untangle), and each keeps the mapping alive."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        # whole huge pages from the first aligned address on, so that the last partial one is a
        # huge page too (and a small arena is one at all: the kernel gives them only to aligned
        # 2 MB ranges that lie wholly inside a mapping)
        length = -(-nbytes // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE
        self._mapping = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._mapping.madvise(mmap.MADV_HUGEPAGE)  # OSError where the kernel refuses
        address = torch.frombuffer(self._mapping, dtype=torch.uint8, count=1).data_ptr()
        self._start = -address % HUGE_PAGE

    def tensor(self, offset: int, dtype: torch.dtype, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """A tensor of `dtype` and `shape` at byte `offset` of the usable part (not initialised)."""
        count = math.prod(shape)
        if offset < 0 or offset + count * dtype.itemsize > self.nbytes:
            raise ValueError(f"{count} x {dtype} at {offset} is outside the arena's {self.nbytes} bytes")
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(self._mapping, dtype=dtype, count=count, offset=self._start + offset)
        return flat.view(shape)


def huge_page_arena(nbytes: int) -> HugePageArena | None:
    """A HugePageArena of `nbytes`; None where the system cannot be asked for huge pages (not
    Linux, or madvise refused)."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    try:
        return HugePageArena(nbytes)
    except OSError:
        return None


def huge_page_buffer(nbytes: int) -> torch.Tensor | None:
    """uint8 [nbytes] on huge pages (see HugePageArena); None where there are none."""
    arena = huge_page_arena(nbytes)
    return None if arena is None else arena.tensor(0, torch.uint8, (nbytes,))


def weights_in_huge_pages(module: nn.Module) -> int:
    """Move `module`'s parameters and buffers that `_movable` takes into one mapping on huge pages,
    each in place (the same Parameter objects, equal values), freeing the old copies as it goes;
    -> the bytes moved (0 where the system gives no huge pages)."""
    tensors: dict[int, torch.Tensor] = {}  # data_ptr -> tensor: a tensor two modules share moves once
    for tensor in [*module.parameters(), *module.buffers()]:
        if _movable(tensor):
            tensors.setdefault(tensor.data_ptr(), tensor)
    aligned = [-(-t.numel() * t.element_size() // 64) * 64 for t in tensors.values()]  # cache-line starts
    arena = huge_page_arena(sum(aligned)) if tensors else None
    if arena is None:
        return 0
    offset = since_trim = 0
    for pointer, size in zip(list(tensors), aligned, strict=True):
        old = tensors.pop(pointer)  # the last reference here to a buffer's old tensor goes with it
        _replace(module, pointer, arena.tensor(offset, old.dtype, old.shape).copy_(old))
        del old
        offset += size
        since_trim += size
        if since_trim >= _TRIM_EVERY:
            release_freed_memory()
            since_trim = 0
    return offset


def _replace(module: nn.Module, pointer: int, tensor: torch.Tensor) -> None:
    """Point every parameter and buffer of `module` whose data starts at `pointer` to `tensor`."""
    for child in module.modules():
        for parameter in child._parameters.values():  # noqa: SLF001  (in place: the same Parameter)
            if parameter is not None and parameter.data_ptr() == pointer:
                parameter.data = tensor
        for name, buffer in child._buffers.items():  # noqa: SLF001
            if buffer is not None and buffer.data_ptr() == pointer:
                child._buffers[name] = tensor  # noqa: SLF001
