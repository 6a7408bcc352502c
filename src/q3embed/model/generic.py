"""Other embedding models (BERT family: all-MiniLM, BGE, GTE, E5) through transformers.

The pooling, maximum length, lower-casing and prompts come from the sentence-transformers files
of the model directory (modules.json, 1_Pooling/config.json, sentence_bert_config.json,
config_sentence_transformers.json), so a model behaves here as it does in sentence-transformers.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, InputError

__all__ = ["EncoderSettings", "TransformersEncoder", "read_encoder_settings", "pool"]

POOLING_MODES = ("mean", "cls", "lasttoken")
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


def pool(hidden: Tensor, mask: Tensor, mode: str) -> Tensor:
    """hidden [B, L, H], mask [B, L] (1 = real token, right padded) -> [B, H] in fp32."""
    hidden = hidden.float()
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1  # right padding: the last real token sits at length - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class TransformersEncoder:
    """A transformers AutoModel plus its sentence-transformers pooling."""

    def __init__(self, model_dir: Path, *, dtype: torch.dtype, device: torch.device) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # stderr is for q3embed's own messages
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
                self.model = AutoModel.from_pretrained(str(model_dir), dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{model_dir} could not be loaded by transformers: {exc}") from None
        self.model.to(device).eval().requires_grad_(False)
        self.tokenizer.padding_side = "right"  # pool() relies on right padding
        self.device = device
        positions = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
        self.settings = read_encoder_settings(model_dir, positions)
        self.dimensions = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        if self.settings.lowercase:
            texts = [t.lower() for t in texts]
        limit = self.settings.max_length
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        out = []
        for index, seq in enumerate(ids):
            if len(seq) > limit:
                if not truncate:
                    raise InputError(
                        f"input {index} is {len(seq)} tokens long, over the maximum of {limit}; "
                        "shorten it or turn truncation on"
                    )
                # Same as the tokenizer's own truncation: keep the closing special token.
                seq = self.tokenizer(texts[index], truncation=True, max_length=limit)["input_ids"]
            out.append(seq)
        return out

    def embed(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """Token id lists -> pooled vectors [B, H] in fp32 (not normalised)."""
        padded = self.tokenizer.pad({"input_ids": [list(s) for s in sequences]}, return_tensors="pt")
        input_ids = padded["input_ids"].to(self.device)
        mask = padded["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.settings.pooling)
