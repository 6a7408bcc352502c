"""Whether a collection fits the loaded model, and how much text one chunk may hold."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from ..engine import ModelInfo
from ..errors import ConfigurationError, ConflictError, InputError
from ..store.protocol import CollectionInfo

__all__ = ["model_key", "check_model", "content_tokens"]


def model_key(name: str) -> str:
    """The comparable part of a model name: 'Qwen/Qwen3-Embedding-0.6B' and '/models/Qwen3-Embedding-0.6B'
    are the same model loaded from the hub and from a local copy."""
    return PurePath(name.rstrip("/\\") or name).name.lower()


def check_model(info: CollectionInfo, encoder: Any) -> None:
    """ConflictError unless the served model is the one the collection was built with, at a size it has."""
    if encoder is None:
        raise ConfigurationError("no embedding model is loaded: collections need one to embed documents and queries")
    served: ModelInfo = encoder.info
    if model_key(info.model) != model_key(served.name) or info.dimensions > served.dimensions:
        raise ConflictError(
            f"collection {info.name!r} was built with {info.model} ({info.dimensions} dimensions), but the "
            f"model loaded is {served.name} ({served.dimensions} dimensions): load {info.model} or use "
            "another collection")


def content_tokens(encoder: Any) -> int:
    """Tokens of text one model input can hold, leaving room for the special tokens it adds."""
    max_length = getattr(encoder.info, "max_length", 0) or 0
    if max_length < 16:
        raise InputError(f"the model's maximum length ({max_length}) is too short for chunking")
    return max_length - 2
