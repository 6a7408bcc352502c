"""What a loaded model reports about itself (ModelInfo), and one token as TEI's /tokenize shows it.

Plain data, without torch: the server, the store and the CLI read these without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelInfo", "TokenSpan"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    kind: str  # "qwen3", "transformers", "qwen3-reranker" or "cosine-similarity"
    dimensions: int
    max_length: int
    device: str
    dtype: str
    supports_instructions: bool
    aliases: tuple[str, ...] = ()  # names besides `name` that chose it (`auto`, see ResolvedModel)
    source: str = ""  # where it was found: "Hugging Face cache ...", "Ollama store ...", "local path ..."
    attention: str = ""  # Qwen3: "sdpa" or "varlen" (model/attention.py); "" where the model's own code attends
    quantize: str = "none"  # "int8": the decoder's matrix products in int8 (model/quantized.py)


@dataclass(frozen=True)
class TokenSpan:
    """One token as TEI's /tokenize shows it."""

    id: int
    text: str  # the characters of the input this token covers ("" for added special tokens)
    special: bool
    start: int  # character offsets into the input
    stop: int
