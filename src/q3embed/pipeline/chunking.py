"""Token-aware chunking: windows of N tokens with an overlap, cut where the model's tokens end.

Chunk boundaries come from the embedding model's own tokenizer offsets, so a chunk of `size`
tokens is embedded whole (never truncated) and its text is exactly `document[start:end]`.
Whitespace at a chunk's edges is trimmed (offsets move with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["Chunk", "ChunkingOptions", "chunk_text", "DEFAULT_CHUNK_SIZE", "DEFAULT_CHUNK_OVERLAP"]

DEFAULT_CHUNK_SIZE = 512
DEFAULT_CHUNK_OVERLAP = 64
MIN_CHUNK_SIZE = 8


@dataclass(frozen=True)
class ChunkingOptions:
    size: int = DEFAULT_CHUNK_SIZE  # tokens per chunk
    overlap: int = DEFAULT_CHUNK_OVERLAP  # tokens each chunk repeats from the one before

    def check(self, max_tokens: int) -> "ChunkingOptions":
        """`max_tokens`: the most content tokens one model input holds (its length less special tokens)."""
        for label, value in (("chunk size", self.size), ("chunk overlap", self.overlap)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{label} must be an integer, got {value!r}")
        if not MIN_CHUNK_SIZE <= self.size <= max_tokens:
            raise InputError(f"chunk size must be from {MIN_CHUNK_SIZE} to {max_tokens} tokens for this model, "
                             f"got {self.size}")
        if not 0 <= self.overlap <= self.size // 2:
            raise InputError(f"chunk overlap must be from 0 to half the chunk size ({self.size // 2}), "
                             f"got {self.overlap}")
        return self


@dataclass(frozen=True)
class Chunk:
    index: int  # position in the document, from 0
    text: str  # == document[start:end]
    start: int
    end: int
    tokens: int  # tokens in the window (the model adds its own special tokens)


def chunk_text(text: str, offsets: Sequence[tuple[int, int]], options: ChunkingOptions) -> list[Chunk]:
    """Split `text` given its token spans (start, end) in order; a whitespace-only text has no chunks."""
    n = len(offsets)
    stride = options.size - options.overlap
    chunks: list[Chunk] = []
    first = 0
    while first < n:
        last = min(first + options.size, n)
        start, end = _trim(text, offsets[first][0], offsets[last - 1][1])
        if end > start:
            chunks.append(Chunk(len(chunks), text[start:end], start, end, last - first))
        if last == n:
            break
        first += stride
    return chunks


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
