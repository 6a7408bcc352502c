"""Reading checkpoints: config.json, safetensors (memory-mapped), GGUF, sentence-transformers
directories, and model ids from the hub. No computation lives here.

Its names are imported on first use (lazy_loader), so importing one module of this package
does not import the others (and torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from .checkpoint import LoadedQwen3
    from .config_json import qwen3_config_from_dict, read_config_json
    from .loading import is_qwen3_model, load_qwen3
    from .resolve import resolve_model
    from .sentence_transformers import LoadedEncoder, load_transformers_encoder

__all__ = ["LoadedQwen3", "LoadedEncoder", "is_qwen3_model", "load_qwen3", "load_transformers_encoder",
           "qwen3_config_from_dict", "read_config_json", "resolve_model"]

_LAZY = {
    "checkpoint": ["LoadedQwen3"],
    "config_json": ["qwen3_config_from_dict", "read_config_json"],
    "loading": ["is_qwen3_model", "load_qwen3"],
    "resolve": ["resolve_model"],
    "sentence_transformers": ["LoadedEncoder", "load_transformers_encoder"],
}
__getattr__, _, _ = lazy_loader.attach(__name__, submod_attrs=_LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)

