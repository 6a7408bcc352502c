"""Reading checkpoints: config.json, safetensors (memory-mapped), GGUF, sentence-transformers
directories, and model ids from the hub. No computation lives here."""

from .checkpoint import LoadedQwen3
from .config_json import qwen3_config_from_dict, read_config_json
from .loading import is_qwen3_model, load_qwen3
from .resolve import resolve_model
from .sentence_transformers import LoadedEncoder, load_transformers_encoder

__all__ = ["LoadedQwen3", "LoadedEncoder", "is_qwen3_model", "load_qwen3", "load_transformers_encoder",
           "qwen3_config_from_dict", "read_config_json", "resolve_model"]
