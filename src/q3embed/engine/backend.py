"""The small contract an embedding backend fulfils, what it reports, and which one a model gets.

    Qwen3EmbeddingBackend   our packed Qwen3 decoder, last-token pooling   (qwen3_backend.py)
    TransformersBackend     BERT-family encoders, their own pooling         (transformers_backend.py)

Backends are engine internals: the Embedder drives them, nothing outside engine/ sees one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import Tensor

from ..text.tokenizer import MAX_LENGTH_DEFAULT
from ..weights.loading import is_qwen3_model, load_qwen3
from ..weights.resolve import AUTO, ResolvedModel, resolve_auto_embedding, resolve_model
from ..weights.sentence_transformers import load_transformers_encoder
from .device import Placement
from .info import ModelInfo, TokenSpan
from .options import ModelOptions

__all__ = ["EmbeddingBackend", "load_embedding_backend"]


class EmbeddingBackend(Protocol):
    info: ModelInfo
    bytes_per_token: int  # activation memory one token of a batch needs (sizes a GPU's token budget)

    def query_text(self, text: str, instruction: str | None) -> str:
        """The text of a query as the model expects it (Qwen3: "Instruct: ...\\nQuery:...")."""
        ...

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        """The exact token ids the model sees (EOS rule, truncation)."""
        ...

    def forward(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """One batch of token id lists -> pooled vectors [B, hidden] in fp32, not normalised."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (no special tokens, no truncation), for chunking."""
        ...

    def token_spans(self, text: str, add_special_tokens: bool) -> list[TokenSpan]:
        """The tokens of one input after truncation, in order; the same ids the model is given."""
        ...

    def compile_now(self) -> bool:
        """Switch to compiled kernels now where they are enabled; whether a forward pass will compile."""
        ...


def load_embedding_backend(options: ModelOptions, placement: Placement) -> EmbeddingBackend:
    """Resolve the model (auto, a path, a hub id or a .gguf file) and build the backend it needs."""
    from .qwen3_backend import Qwen3EmbeddingBackend
    from .transformers_backend import TransformersBackend

    model = options.model
    resolved: ResolvedModel = (resolve_auto_embedding(options.hub) if model == AUTO
                               else resolve_model(model, hub=options.hub))
    if is_qwen3_model(resolved.path):
        length = options.max_length or MAX_LENGTH_DEFAULT
        loaded = load_qwen3(resolved.path, max_length=length, dtype=placement.dtype, device=placement.device)
        if options.special_tokens == "plain":
            loaded.tokenizer.treat_special_tokens_as_text()
        return Qwen3EmbeddingBackend(resolved, loaded, placement)
    encoder = load_transformers_encoder(resolved.path, dtype=placement.dtype, device=placement.device,
                                        max_length=options.max_length)
    return TransformersBackend(resolved, encoder, placement, split_special_tokens=options.special_tokens == "plain")
