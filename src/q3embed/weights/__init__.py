"""Reading checkpoints: config.json, safetensors (memory-mapped), model ids from the hub."""

from .checkpoint import load_qwen3
from .config import qwen3_config_from_dict, read_config_json
from .resolve import resolve_model

__all__ = ["load_qwen3", "qwen3_config_from_dict", "read_config_json", "resolve_model"]
