"""One call per model family: a resolved model path -> the pieces the engine runs.

Safetensors directories and GGUF files both load into the same `LoadedQwen3` (tokenizer,
decoder, config, the reranker's head rows), so nothing above this module branches on the format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigurationError
from .checkpoint import LoadedQwen3, load_qwen3_dir
from .config_json import is_qwen3, read_config_json
from .gguf import is_gguf_file, load_gguf_qwen3

__all__ = ["is_qwen3_model", "load_qwen3"]


def is_qwen3_model(path: Path) -> bool:
    """A Qwen3 checkpoint (a GGUF file, or a directory whose config.json says qwen3), or another
    transformers model directory; a file that is not GGUF is refused."""
    if is_gguf_file(path):
        return True
    if path.is_file():
        raise ConfigurationError(f"{path} is a file; pass the model directory or a .gguf file")
    return is_qwen3(read_config_json(path))


def load_qwen3(path: Path, *, max_length: int, dtype: torch.dtype, device: torch.device,
               reranker: bool = False) -> LoadedQwen3:
    """Tokenizer and decoder from a directory or a .gguf file; `reranker` also keeps the (no, yes) rows."""
    if is_gguf_file(path):
        return load_gguf_qwen3(path, max_length=max_length, dtype=dtype, device=device, reranker=reranker)
    return load_qwen3_dir(path, max_length=max_length, dtype=dtype, device=device, reranker=reranker)
