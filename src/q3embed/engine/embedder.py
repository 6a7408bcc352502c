"""Embedder: texts in, vectors out, for Qwen3-Embedding and BERT-family models alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..model.heads import matryoshka
from .backends import EmbeddingBackend, ModelInfo, load_embedding_backend
from .batch import plan_batches
from .device import resolve_compile, resolve_device, resolve_dtype
from .inputs import check_dimensions, check_text, check_texts

__all__ = ["Embedder", "similarity", "DEFAULT_MAX_BATCH_TOKENS"]

DEFAULT_MAX_BATCH_TOKENS = 8192


class Embedder:
    """Loads one embedding model and encodes texts with it.

    >>> emb = Embedder("Qwen/Qwen3-Embedding-0.6B")
    >>> q = emb.encode_queries(["What is the capital of China?"])
    >>> d = emb.encode_documents(["The capital of China is Beijing."])
    >>> emb.similarity(q, d)
    """

    def __init__(
        self,
        model: str = "auto",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_length: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        compile: str | None = None,
    ) -> None:
        """compile: auto, on or off for the decoder's fused kernels (None: Q3EMBED_COMPILE, else auto;
        see engine.device.resolve_compile)."""
        resolved_device = resolve_device(device)
        self.backend: EmbeddingBackend = load_embedding_backend(
            model,
            device=resolved_device,
            dtype=resolve_dtype(dtype, resolved_device),
            max_length=max_length,
            compile_after=resolve_compile(compile, resolved_device),
        )
        if not isinstance(max_batch_tokens, int) or max_batch_tokens < 1:
            raise InputError(f"max_batch_tokens must be a positive integer, got {max_batch_tokens!r}")
        self.max_batch_tokens = max_batch_tokens

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    @property
    def dimensions(self) -> int:
        return self.backend.info.dimensions

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        query: bool = False,
        instruction: str | None = None,
        dimensions: int | None = None,
        normalize: bool = True,
        truncate: bool = True,
    ) -> np.ndarray:
        """float32 vectors: [N, d] for a list, [d] for a single string.

        query=True wraps each text in the model's query template (Qwen3:
        "Instruct: {instruction}\\nQuery:{text}"); documents are embedded as they are.
        `dimensions` slices to a Matryoshka size from 32 to the hidden size.
        """
        items, single = check_texts(texts)
        size = check_dimensions(dimensions, self.dimensions)
        if instruction is not None:
            if not query:
                raise InputError("an instruction applies to queries only: pass query=True with it")
            check_text(instruction, "instruction")
        prompts = [self.backend.query_text(t, instruction) for t in items] if query else items
        token_lists = self.backend.tokenize(prompts, truncate=truncate)
        vectors = matryoshka(self.embed_tokens(token_lists), size, normalize)
        array = vectors.numpy()
        return array[0] if single else array

    def encode_queries(self, texts: str | Sequence[str], *, instruction: str | None = None, **kwargs: Any) -> np.ndarray:
        return self.encode(texts, query=True, instruction=instruction, **kwargs)

    def encode_documents(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode(texts, query=False, **kwargs)

    def tokenize(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[int]]:
        """The exact token ids the model sees (EOS included for Qwen3)."""
        items, _ = check_texts(texts)
        return self.backend.tokenize(items, truncate=truncate)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character span of each token of `text` as a document (no special tokens,
        no truncation): where a chunker can cut so that each piece's length in tokens is known."""
        return self.backend.token_offsets(check_text(text, "text"))

    @torch.inference_mode()
    def embed_tokens(self, token_lists: Sequence[Sequence[int]]) -> Tensor:
        """Token id lists -> pooled fp32 vectors [N, hidden] on CPU, in input order."""
        out = torch.empty(len(token_lists), self.dimensions, dtype=torch.float32)
        lengths = [len(ids) for ids in token_lists]
        for batch in plan_batches(lengths, self.max_batch_tokens):
            pooled = self.backend.embed([token_lists[i] for i in batch])  # [b, hidden]
            out[batch] = pooled.to("cpu", torch.float32)
        return out

    def warm_up(self) -> None:
        """Compile the fused kernels now, where they are enabled, with one short forward pass (a
        server calls this at start-up, so that no request waits for a compile)."""
        kernels = getattr(self.backend, "kernels", None)
        if kernels is not None and kernels.compile_now():
            self.embed_tokens(self.backend.tokenize(["warm up"], truncate=True))

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return similarity(a, b)


def similarity(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> np.ndarray:
    """Cosine similarity matrix [N, M] between vectors a [N, d] (or [d]) and b [M, d] (or [d])."""
    left = np.atleast_2d(np.asarray(a, dtype=np.float32))
    right = np.atleast_2d(np.asarray(b, dtype=np.float32))
    if left.shape[1] != right.shape[1]:
        raise InputError(f"vectors of different sizes cannot be compared: {left.shape[1]} and {right.shape[1]}")
    left = left / np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
    right = right / np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
    return left @ right.T
