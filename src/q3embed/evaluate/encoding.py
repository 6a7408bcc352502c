"""Embedding many texts for evaluation: in chunks (for a progress bar), empty texts allowed.

`Embedder.encode` refuses empty strings, which is right for an API, but real corpora contain
empty documents and sentence-transformers embeds them (the model still sees its special tokens).
Those go through the engine's tokenizer and model directly, so they get exactly the vector the
model gives its special tokens alone, as in the reference tools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..engine import Embedder
from ..model.heads import matryoshka

__all__ = ["encode_texts", "CHUNK"]

CHUNK = 64  # texts per `encode` call: the progress bar moves this often; batching stays token-based


def _encode_empty(embedder: Embedder, count: int, query: bool, instruction: str | None,
                  dimensions: int | None) -> np.ndarray:
    prompt = embedder.backend.query_text("", instruction) if query else ""
    tokens = embedder.backend.tokenize([prompt], truncate=True)
    vector = matryoshka(embedder.embed_tokens(tokens), dimensions, True).numpy()  # [1, d]
    return np.repeat(vector, count, axis=0)


def encode_texts(embedder: Embedder, texts: Sequence[str], *, query: bool = False, instruction: str | None = None,
                 dimensions: int | None = None, progress: Callable[[int], object] | None = None) -> np.ndarray:
    """float32 unit vectors [N, d] in input order; `progress(n)` is called after each n texts.

    Texts are taken longest first so that each chunk holds similar lengths (less padding for
    BERT-family models, and the slowest work first, so the ETA is pessimistic early, not late).
    """
    size = dimensions or embedder.dimensions
    out = np.empty((len(texts), size), dtype=np.float32)
    filled = [i for i, text in enumerate(texts) if text.strip()]
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        out[empty] = _encode_empty(embedder, len(empty), query, instruction, dimensions)
        if progress:
            progress(len(empty))
    order = sorted(filled, key=lambda i: -len(texts[i]))
    for start in range(0, len(order), CHUNK):
        chunk = order[start:start + CHUNK]
        out[chunk] = embedder.encode([texts[i] for i in chunk], query=query, instruction=instruction,
                                     dimensions=dimensions)
        if progress:
            progress(len(chunk))
    return out
