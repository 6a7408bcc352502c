"""Pure torch models: the packed Qwen3 decoder, its heads, and transformers encoders."""

from .heads import YesNoHead, last_token_indices, matryoshka
from .qwen3 import Qwen3Config, Qwen3Model

__all__ = ["Qwen3Config", "Qwen3Model", "YesNoHead", "last_token_indices", "matryoshka"]
