"""Embedder: texts in, vectors out, for Qwen3-Embedding and BERT-family models alike.

Every embedding, whichever caller asks, takes the same three steps:

    prepare   check the texts, apply the query prompt, tokenize     (the caller's thread)
    run       packed batches under the token budget, scattered back  (jobs.Scheduler: inline here,
                                                                     on the worker in Engine)
    finish    Matryoshka slice, then L2-normalise                    (model.heads.matryoshka)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import InputError
from ..model.heads import matryoshka
from .backend import EmbeddingBackend, load_embedding_backend
from .device import place
from .info import ModelInfo, TokenSpan
from .inputs import check_dimensions, check_text, check_texts
from .jobs import EmbedJob, run_jobs
from .options import ModelOptions, model_options

__all__ = ["Embedder", "PreparedEmbedding", "similarity"]


@dataclass(frozen=True)
class PreparedEmbedding:
    """A checked, tokenized embedding request, ready for the model."""

    token_lists: list[list[int]]  # what the model sees, per input (EOS included for Qwen3)
    dimensions: int | None  # Matryoshka size (None: the model's)
    normalize: bool
    single: bool  # a single string was given: encode returns one vector [d]

    @property
    def token_counts(self) -> list[int]:
        return [len(ids) for ids in self.token_lists]


class Embedder:
    """Loads one embedding model and encodes texts with it.

    >>> emb = Embedder("Qwen/Qwen3-Embedding-0.6B")                  # or Embedder(ModelOptions(...))
    >>> q = emb.encode_queries(["What is the capital of China?"])
    >>> d = emb.encode_documents(["The capital of China is Beijing."])
    >>> emb.similarity(q, d)
    """

    def __init__(self, model: str | os.PathLike[str] | ModelOptions = "auto", **options: Any) -> None:
        """`model`: a directory, a .gguf file, a hub id or auto, or a whole ModelOptions; keyword
        options are its fields: device, dtype, max_length, max_batch_tokens, compile, attention,
        threads, special_tokens, hub."""
        self.options = model_options(model, options)
        placement = place(self.options)
        self._backend: EmbeddingBackend = load_embedding_backend(self.options, placement)
        self.max_batch_tokens = placement.batch_tokens(self._backend.bytes_per_token)  # after the weights are placed
        self.info: ModelInfo = self._backend.info

    @property
    def bytes_per_token(self) -> int:
        """Activation memory one token of a batch needs (what sizes a GPU's token budget)."""
        return self._backend.bytes_per_token

    @property
    def dimensions(self) -> int:
        return self.info.dimensions

    # ------------------------------------------------------------------ the three steps

    def _prompts(self, texts: list[str], query: bool, instruction: str | None) -> list[str]:
        """The one prompt rule: an instruction means a query, wherever it comes from."""
        if instruction is not None:
            check_text(instruction, "instruction")
            query = True
        return [self._backend.query_text(t, instruction) for t in texts] if query else texts

    def prepare(self, texts: str | Sequence[str], *, query: bool = False, instruction: str | None = None,
                dimensions: int | None = None, normalize: bool = True, truncate: bool = True,
                allow_empty: bool = False) -> PreparedEmbedding:
        """Check and tokenize; every mistake is an InputError before any model work.

        allow_empty embeds "" as the model's special tokens alone (as sentence-transformers does
        for the empty documents of real corpora) instead of refusing it.
        """
        items, single = check_texts(texts, allow_empty=allow_empty)
        size = check_dimensions(dimensions, self.dimensions)
        token_lists = self._backend.tokenize(self._prompts(items, query, instruction), truncate=truncate)
        return PreparedEmbedding(token_lists, size, normalize, single)

    def forward(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """One packed batch -> pooled fp32 vectors [b, hidden] (what the engine's worker runs)."""
        return self._backend.forward(sequences)

    def run(self, token_lists: Sequence[Sequence[int]]) -> Tensor:
        """Token id lists -> pooled fp32 vectors [n, hidden] on CPU, in order, on this thread."""
        job = EmbedJob(token_lists)
        run_jobs([job], self.forward, self.max_batch_tokens)
        return job.future.result()

    @staticmethod
    def finish(prepared: PreparedEmbedding, pooled: Tensor) -> np.ndarray:
        """pooled [n, hidden] -> float32 [n, d]: Matryoshka slice, then normalisation."""
        return matryoshka(pooled, prepared.dimensions, prepared.normalize).numpy()

    # ------------------------------------------------------------------ the API

    def encode(self, texts: str | Sequence[str], *, query: bool = False, instruction: str | None = None,
               dimensions: int | None = None, normalize: bool = True, truncate: bool = True,
               allow_empty: bool = False) -> np.ndarray:
        """float32 vectors: [N, d] for a list, [d] for a single string.

        query=True wraps each text in the model's query template (Qwen3:
        "Instruct: {instruction}\\nQuery:{text}"); an instruction implies query=True.
        Documents are embedded as they are. `dimensions` slices to a Matryoshka size from 32
        to the hidden size.
        """
        prepared = self.prepare(texts, query=query, instruction=instruction, dimensions=dimensions,
                                normalize=normalize, truncate=truncate, allow_empty=allow_empty)
        vectors = self.finish(prepared, self.run(prepared.token_lists))
        return vectors[0] if prepared.single else vectors

    def encode_queries(self, texts: str | Sequence[str], *, instruction: str | None = None,
                       **kwargs: Any) -> np.ndarray:
        return self.encode(texts, query=True, instruction=instruction, **kwargs)

    def encode_documents(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode(texts, query=False, **kwargs)

    def tokenize(self, texts: str | Sequence[str], *, query: bool = False, instruction: str | None = None,
                 truncate: bool = True) -> list[list[int]]:
        """The exact token ids the model sees for each input (query prompt and EOS included)."""
        return self.prepare(texts, query=query, instruction=instruction, truncate=truncate).token_lists

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character span of each token of `text` as a document (no special tokens,
        no truncation): where a chunker can cut so that each piece's length in tokens is known."""
        return self._backend.token_offsets(check_text(text, "text"))

    def token_spans(self, texts: str | Sequence[str], *, query: bool = False,
                    add_special_tokens: bool = True) -> list[list[TokenSpan]]:
        """The tokens of each input (in its query prompt with query=True), with their character spans."""
        items, _ = check_texts(texts)
        return [self._backend.token_spans(text, add_special_tokens) for text in self._prompts(items, query, None)]

    def warm_up(self) -> None:
        """Compile the fused kernels now, where they are enabled (for any length: the backend runs
        the decoder at two), then embed one short text end to end (a server calls this at
        start-up, so that no request waits for a compile)."""
        if self._backend.compile_now():
            self.run(self.tokenize(["warm up"]))

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
