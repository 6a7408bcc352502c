"""Pure torch models, no I/O: the packed Qwen3 decoder, its kernels, and the output heads."""

from .heads import YesNoHead, last_token_indices, matryoshka, pool_padded
from .qwen3 import Qwen3Config, Qwen3Model

__all__ = ["Qwen3Config", "Qwen3Model", "YesNoHead", "last_token_indices", "matryoshka", "pool_padded"]
