"""config.json -> Qwen3Config, in both the `rope_theta` (transformers 4.51) and the newer
`rope_parameters` forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..model.qwen3 import Qwen3Config

__all__ = ["read_config_json", "qwen3_config_from_dict", "is_qwen3"]

_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


def read_config_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json: is it a Hugging Face model directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return raw


def is_qwen3(raw: dict[str, Any]) -> bool:
    return raw.get("model_type") == "qwen3"


def _rope_theta(raw: dict[str, Any], where: str) -> float:
    params = raw.get("rope_parameters") or {}
    legacy_scaling = raw.get("rope_scaling")
    rope_type = params.get("rope_type", "default")
    if rope_type != "default" or legacy_scaling:
        # Qwen3-Embedding/Reranker use plain RoPE; a scaled variant would silently give wrong
        # vectors if we ignored it, so refuse it by name.
        raise CheckpointError(f"{where}: RoPE scaling {params or legacy_scaling} is not supported")
    theta = params.get("rope_theta", raw.get("rope_theta"))
    if theta is None:
        raise CheckpointError(f"{where}: neither rope_theta nor rope_parameters.rope_theta is set")
    return float(theta)


def qwen3_config_from_dict(raw: dict[str, Any], where: str = "config.json") -> Qwen3Config:
    if not is_qwen3(raw):
        raise CheckpointError(f"{where}: model_type is {raw.get('model_type')!r}, expected 'qwen3'")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise CheckpointError(f"{where}: missing keys {', '.join(missing)}")
    heads = int(raw["num_attention_heads"])
    return Qwen3Config(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(raw["num_key_value_heads"]),
        head_dim=int(raw.get("head_dim") or int(raw["hidden_size"]) // heads),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(raw, where),
        max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
        attention_bias=bool(raw.get("attention_bias", False)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
    )
