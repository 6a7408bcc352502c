"""The GGUF container: header, metadata and tensor index over a memory map, every offset checked.

Why not `gguf.GGUFReader`: it turns every element of every metadata array into numpy views, and a
Qwen3 file carries ~300k strings (151,669 tokens and 151,387 merges); on the 2-core development VM
that took 18 s before a single weight was read. This reader does the same walk with `struct` in
well under a second. The `gguf` package still supplies the constants (value and tensor types, block
sizes), the dequantizers and the tensor-name map.

Layout (v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
metadata (key string, u32 value type, value), tensor infos (name, u32 n_dims, u64 dims[n_dims]
with the fastest-varying dimension first, u32 ggml type, u64 offset), padding to
`general.alignment` (32), then the tensor data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from ..errors import CheckpointError

__all__ = ["GGUF_MAGIC", "GgufFile", "GgufTensor"]

GGUF_MAGIC = b"GGUF"
_VERSIONS = (2, 3)  # v1 counted in 32 bits and predates every Qwen3 file
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_COUNT = 1 << 24  # more tensors or metadata keys than this is a corrupt count, not a model

_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


class _Corrupt(Exception):
    """A structural problem, turned into a CheckpointError naming the file."""


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]  # torch order, e.g. [out_features, in_features]; GGUF lists it reversed
    qtype: GGMLQuantizationType
    offset: int  # absolute position of the first byte in the file
    nbytes: int


class _Cursor:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def _need(self, size: int, what: str) -> None:
        if size < 0 or self.pos + size > len(self.buf):
            raise _Corrupt(f"it ends inside the {what} (byte {self.pos}, file size {len(self.buf)}): truncated")

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self._need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        length = self.scalar("<Q", what)
        self._need(length, what)
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"the {what} is not valid UTF-8") from None

    def value(self, vtype: int, what: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype == GGUFValueType.ARRAY:
            return self._array(what)
        fmt = _SCALAR_FORMATS.get(vtype)  # type: ignore[call-overload]
        if fmt is None:
            raise _Corrupt(f"the {what} has unknown value type {vtype}")
        return self.scalar(fmt, what)

    def _array(self, what: str) -> list[Any]:
        item_type = self.scalar("<I", what)
        count = self.scalar("<Q", what)
        if item_type == GGUFValueType.STRING:
            return [self.string(what) for _ in range(count)]
        fmt = _SCALAR_FORMATS.get(item_type)  # type: ignore[call-overload]
        if fmt is None:  # nested arrays: no Qwen3 key uses them
            raise _Corrupt(f"the {what} is an array of unsupported type {item_type}")
        size = struct.calcsize(fmt) * count
        self._need(size, what)
        values = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=count, offset=self.pos).tolist()
        self.pos += size
        return values


def _tensor_info(cursor: _Cursor) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int, int]:
    name = cursor.string("tensor table")
    n_dims = cursor.scalar("<I", f"tensor info of {name}")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
    dims = [cursor.scalar("<Q", f"tensor info of {name}") for _ in range(n_dims)]
    raw_type = cursor.scalar("<I", f"tensor info of {name}")
    offset = cursor.scalar("<Q", f"tensor info of {name}")
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise _Corrupt(f"tensor {name} has ggml type id {raw_type}, unknown to the gguf package") from None
    block, type_size = GGML_QUANT_SIZES[qtype]
    elements = int(np.prod(dims, dtype=np.int64))
    if dims[0] % block:
        raise _Corrupt(f"tensor {name}: row length {dims[0]} is not a multiple of the {qtype.name} block ({block})")
    # GGUF lists dims fastest-varying first (ne0 = columns); torch wants them the other way round.
    return name, tuple(reversed(dims)), qtype, offset, elements // block * type_size


@dataclass
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GgufTensor]
    data: np.ndarray  # uint8 view of the whole file, writable (copy-on-write) so torch can wrap slices
    _map: mmap.mmap = field(repr=False)

    @classmethod
    def open(cls, path: Path) -> GgufFile:
        """Parse the header of `path`; a truncated or corrupt file is one CheckpointError."""
        try:
            with path.open("rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise CheckpointError(f"{path} is not a readable GGUF file: {exc}") from None
        data = np.frombuffer(mapped, dtype=np.uint8)
        try:
            version, metadata, tensors = _parse(memoryview(data))
        except _Corrupt as exc:
            raise CheckpointError(f"{path} is not a valid GGUF file: {exc}") from None
        return cls(path=path, version=version, metadata=metadata, tensors=tensors, data=data, _map=mapped)

    def release(self, tensor: GgufTensor) -> None:
        """Drop the pages of `tensor` from this process's resident memory once it was converted.

        A mapped file page that was read counts in the RSS until unmapped: without this, loading
        holds the whole file *and* the dequantized model at once. The pages are never written, so
        they are re-read from the file should anything touch them again.
        """
        if hasattr(mmap, "MADV_DONTNEED"):  # Linux and the BSDs; elsewhere the OS reclaims them
            start = tensor.offset // mmap.PAGESIZE * mmap.PAGESIZE
            self._map.madvise(mmap.MADV_DONTNEED, start, tensor.offset + tensor.nbytes - start)

    def raw(self, tensor: GgufTensor, rows: slice | None = None) -> np.ndarray:
        """The stored bytes of `tensor` as [rows, bytes per row] uint8 (all rows, or a slice)."""
        out_rows = int(np.prod(tensor.shape[:-1], dtype=np.int64)) if len(tensor.shape) > 1 else 1
        per_row = tensor.nbytes // out_rows
        start, stop, _ = (rows or slice(None)).indices(out_rows)
        flat = self.data[tensor.offset + start * per_row : tensor.offset + stop * per_row]
        return flat.reshape(stop - start, per_row)


def _parse(buf: memoryview) -> tuple[int, dict[str, Any], dict[str, GgufTensor]]:
    cursor = _Cursor(buf)
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise _Corrupt(f"it does not start with the GGUF magic (found {bytes(buf[:4])!r})")
    cursor.pos = 4
    version = cursor.scalar("<I", "header")
    if version & 0xFFFF == 0:
        raise _Corrupt("it is a big-endian GGUF file; only little-endian files are supported")
    if version not in _VERSIONS:
        raise _Corrupt(f"GGUF version {version} is not supported (versions {_VERSIONS})")
    tensor_count = cursor.scalar("<Q", "header")
    kv_count = cursor.scalar("<Q", "header")
    if tensor_count > _MAX_COUNT or kv_count > _MAX_COUNT:
        raise _Corrupt(f"the header claims {tensor_count} tensors and {kv_count} metadata keys")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string("metadata")
        metadata[key] = cursor.value(cursor.scalar("<I", f"metadata key {key}"), f"metadata value of {key}")
    infos = [_tensor_info(cursor) for _ in range(tensor_count)]
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-cursor.pos // alignment) * alignment
    tensors: dict[str, GgufTensor] = {}
    for name, shape, qtype, offset, nbytes in infos:
        if name in tensors:
            raise _Corrupt(f"tensor {name} appears twice")
        start = data_start + offset
        if start + nbytes > len(buf):
            raise _Corrupt(
                f"tensor {name} needs bytes {start}..{start + nbytes} but the file has {len(buf)}: "
                "it is truncated (an interrupted download or copy?)"
            )
        tensors[name] = GgufTensor(name=name, shape=shape, qtype=qtype, offset=start, nbytes=nbytes)
    return version, metadata, tensors
