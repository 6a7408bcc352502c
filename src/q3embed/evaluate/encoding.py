"""Embedding many texts for evaluation: in chunks (for a progress bar), empty texts allowed.

`Embedder.encode` refuses empty strings by default, which is right for an API, but real corpora
contain empty documents and sentence-transformers embeds them (the model still sees its special
tokens): `allow_empty=True` gives them exactly that vector, as in the reference tools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..engine import Embedder

__all__ = ["encode_texts", "CHUNK"]

CHUNK = 64  # texts per `encode` call: the progress bar moves this often; batching stays token-based


def encode_texts(embedder: Embedder, texts: Sequence[str], *, query: bool = False, instruction: str | None = None,
                 dimensions: int | None = None, progress: Callable[[int], object] | None = None) -> np.ndarray:
    """float32 unit vectors [N, d] in input order; `progress(n)` is called after each n texts.

    Texts are taken longest first so that each chunk holds similar lengths (less padding for
    BERT-family models, and the slowest work first, so the ETA is pessimistic early, not late).
    """
    out = np.empty((len(texts), dimensions or embedder.dimensions), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(order), CHUNK):
        chunk = order[start:start + CHUNK]
        out[chunk] = embedder.encode([texts[i] for i in chunk], query=query, instruction=instruction,
                                     dimensions=dimensions, allow_empty=True)
        if progress:
            progress(len(chunk))
    return out
