"""Embedding backends: the small contract the Embedder drives, and its two implementations.

    Qwen3EmbeddingBackend   our packed Qwen3 decoder, last-token pooling
    TransformersBackend     BERT-family encoders through transformers, their own pooling
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..model.generic import TransformersEncoder
from ..model.heads import last_token_indices
from ..model.kernels import KernelSchedule
from ..text.prompts import query_text
from ..text.tokenizer import MAX_LENGTH_DEFAULT, Qwen3Tokenizer
from ..weights.checkpoint import load_qwen3
from ..weights.config import is_qwen3, read_config_json
from ..weights.gguf import is_gguf_file, load_gguf_qwen3
from ..weights.resolve import AUTO, ResolvedModel, resolve_auto_embedding, resolve_model
from .batch import pack
from .device import dtype_name

__all__ = ["EmbeddingBackend", "ModelInfo", "load_embedding_backend"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    kind: str  # "qwen3" or "transformers"
    dimensions: int
    max_length: int
    device: str
    dtype: str
    supports_instructions: bool


class EmbeddingBackend(Protocol):
    info: ModelInfo

    def query_text(self, text: str, instruction: str | None) -> str: ...

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]: ...

    def embed(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """Token id lists -> pooled vectors [B, hidden] in fp32, not normalised."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (no special tokens, no truncation), for chunking."""
        ...


class Qwen3EmbeddingBackend:
    def __init__(self, resolved: ResolvedModel, *, device: torch.device, dtype: torch.dtype, max_length: int,
                 compile_after: int | None = None) -> None:
        if is_gguf_file(resolved.path):
            self.tokenizer, loaded = load_gguf_qwen3(resolved.path, max_length=max_length, dtype=dtype, device=device)
        else:
            self.tokenizer = Qwen3Tokenizer.from_dir(resolved.path, max_length)
            loaded = load_qwen3(resolved.path, dtype=dtype, device=device)
        self.model = loaded.model
        self.kernels = KernelSchedule(self.model, compile_after)
        self.device = device
        self.info = ModelInfo(
            name=resolved.name,
            path=str(resolved.path),
            kind="qwen3",
            dimensions=loaded.config.hidden_size,
            max_length=max_length,
            device=str(device),
            dtype=dtype_name(dtype),
            supports_instructions=True,
        )

    def query_text(self, text: str, instruction: str | None) -> str:
        return query_text(text, instruction)

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        return self.tokenizer.encode_embedding_inputs(texts, truncate=truncate)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self.tokenizer.encode_raw([text])[0].offsets)

    def embed(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        input_ids, positions, seq_lens = pack(sequences, self.device)
        self.kernels.count(len(input_ids))
        hidden = self.model(input_ids, positions, seq_lens)  # [T, hidden]
        return hidden[last_token_indices(seq_lens, self.device)].float()  # [B, hidden]


class TransformersBackend:
    def __init__(self, resolved: ResolvedModel, *, device: torch.device, dtype: torch.dtype, max_length: int | None) -> None:
        self.encoder = TransformersEncoder(resolved.path, dtype=dtype, device=device)
        if max_length is not None:
            # A user may shorten the model's own limit, never lengthen it past its positions.
            limit = min(max_length, self.encoder.settings.max_length)
            self.encoder.settings = replace(self.encoder.settings, max_length=limit)
        self.info = ModelInfo(
            name=resolved.name,
            path=str(resolved.path),
            kind="transformers",
            dimensions=self.encoder.dimensions,
            max_length=self.encoder.settings.max_length,
            device=str(device),
            dtype=dtype_name(dtype),
            supports_instructions="query" in self.encoder.settings.prompts,
        )

    def query_text(self, text: str, instruction: str | None) -> str:
        # BERT-family models take a fixed query prompt (E5's "query: ") when their
        # sentence-transformers config names one; a free-form instruction is Qwen3's feature.
        prompt = self.encoder.settings.prompts.get("query", "")
        return f"{instruction}{text}" if instruction else f"{prompt}{text}"

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        return self.encoder.tokenize(texts, truncate=truncate)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        tokenizer = self.encoder.tokenizer
        lowered = text.lower() if self.encoder.settings.lowercase else text
        spans = tokenizer(lowered, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(start), int(end)) for start, end in spans["offset_mapping"]]

    def embed(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        return self.encoder.embed(sequences)


def load_embedding_backend(
    model: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_length: int | None = None,
    compile_after: int | None = None,
) -> EmbeddingBackend:
    """Resolve `model` (auto, a path, a hub id or a .gguf file) and build the backend it needs."""
    resolved = resolve_auto_embedding() if model == AUTO else resolve_model(model)
    if resolved.path.is_file() and not is_gguf_file(resolved.path):
        raise ConfigurationError(f"{resolved.path} is a file; pass the model directory or a .gguf file")
    if is_gguf_file(resolved.path) or is_qwen3(read_config_json(resolved.path)):
        return Qwen3EmbeddingBackend(
            resolved, device=device, dtype=dtype, max_length=max_length or MAX_LENGTH_DEFAULT,
            compile_after=compile_after
        )
    return TransformersBackend(resolved, device=device, dtype=dtype, max_length=max_length)

