"""Loading other embedding models (BERT family: all-MiniLM, BGE, GTE, E5) through transformers.

The pooling, maximum length, lower-casing and prompts come from the sentence-transformers files
of the model directory (modules.json, 1_Pooling/config.json, sentence_bert_config.json,
config_sentence_transformers.json), so a model behaves here as it does in sentence-transformers.
The computation itself (forward, pooling) is the engine's (engine/transformers_backend.py).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.heads import POOLING_MODES

__all__ = ["EncoderSettings", "LoadedEncoder", "load_transformers_encoder", "read_encoder_settings"]

# The boolean keys of sentence-transformers' 1_Pooling/config.json, per mode we support.
_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


@dataclass(frozen=True)
class EncoderSettings:
    pooling: str = "mean"
    max_length: int = 512
    lowercase: bool = False
    prompts: dict[str, str] = field(default_factory=dict)  # e.g. {"query": "query: "}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def _pooling_mode(model_dir: Path) -> str:
    modules = _read_json(model_dir / "modules.json") or []
    pooling_dirs = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")]
    config = _read_json(model_dir / (pooling_dirs[0] if pooling_dirs else "1_Pooling") / "config.json")
    if "pooling_mode" in config:
        mode = str(config["pooling_mode"])
        mode = "lasttoken" if mode == "last" else mode
    else:
        enabled = [mode for mode, flag in _POOLING_FLAGS.items() if config.get(flag)]
        unsupported = [key for key, on in config.items()
                       if key.startswith("pooling_mode_") and on and key not in _POOLING_FLAGS.values()]
        if unsupported or len(enabled) > 1:
            raise CheckpointError(f"{model_dir}: pooling {', '.join(unsupported + enabled)} is not supported "
                                  f"(one of {', '.join(POOLING_MODES)})")
        mode = enabled[0] if enabled else "mean"
    if mode not in POOLING_MODES:
        raise CheckpointError(f"{model_dir}: pooling mode {mode!r} is not supported ({', '.join(POOLING_MODES)})")
    return mode


def read_encoder_settings(model_dir: Path, model_max_positions: int) -> EncoderSettings:
    bert_config = _read_json(model_dir / "sentence_bert_config.json")
    st_config = _read_json(model_dir / "config_sentence_transformers.json")
    max_length = int(bert_config.get("max_seq_length") or min(model_max_positions, 512))
    return EncoderSettings(
        pooling=_pooling_mode(model_dir),
        max_length=min(max_length, model_max_positions),
        lowercase=bool(bert_config.get("do_lower_case", False)),
        prompts={k: v for k, v in (st_config.get("prompts") or {}).items() if isinstance(v, str)},
    )


@dataclass
class LoadedEncoder:
    tokenizer: Any  # a transformers fast tokenizer, right padding
    model: torch.nn.Module  # a transformers AutoModel in eval mode on its device
    settings: EncoderSettings
    dimensions: int


def load_transformers_encoder(model_dir: Path, *, dtype: torch.dtype, device: torch.device,
                              max_length: int | None = None) -> LoadedEncoder:
    """AutoTokenizer + AutoModel + the sentence-transformers settings; `max_length` may shorten the
    model's own limit, never lengthen it past its positions."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # stderr is for q3embed's own messages
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            model = AutoModel.from_pretrained(str(model_dir), dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{model_dir} could not be loaded by transformers: {exc}") from None
    model.to(device).eval().requires_grad_(False)
    tokenizer.padding_side = "right"  # the engine's pooling relies on right padding
    positions = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    settings = read_encoder_settings(model_dir, positions)
    if max_length is not None:
        settings = replace(settings, max_length=min(max_length, settings.max_length))
    return LoadedEncoder(tokenizer, model, settings, int(model.config.hidden_size))
