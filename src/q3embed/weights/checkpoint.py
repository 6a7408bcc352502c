"""Safetensors checkpoints -> a Qwen3Model, memory-mapped, built on the meta device.

Both official layouts load: the embedding repos (`embed_tokens.weight`, `layers.N...`) and the
reranker repos (`Qwen3ForCausalLM`: `model.` prefix plus `lm_head.weight`, possibly tied), in
one file or sharded with `model.safetensors.index.json`. Every missing, unexpected or
mis-shaped tensor is reported at once, in one error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..errors import CheckpointError
from ..model.qwen3 import Qwen3Config, Qwen3Model
from ..text.tokenizer import Qwen3Tokenizer
from .config_json import qwen3_config_from_dict, read_config_json

__all__ = ["load_qwen3_dir", "LoadedQwen3", "safetensors_files"]

_PREFIX = "model."
_LM_HEAD = "lm_head.weight"
# Buffers some exporters write; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_REPORT_LIMIT = 12


@dataclass
class LoadedQwen3:
    """What every Qwen3 loader (safetensors, GGUF) returns: the same pieces whatever the format."""

    config: Qwen3Config
    model: Qwen3Model
    tokenizer: Qwen3Tokenizer
    head_rows: Tensor | None  # [2, hidden]: the (no, yes) rows of lm_head, for a reranker


@dataclass
class _Problems:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)

    def raise_if_any(self, model_dir: Path, source: str = "its config.json") -> None:
        parts = []
        for label, names in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.misshaped),
        ):
            if names:
                shown = ", ".join(sorted(names)[:_REPORT_LIMIT])
                more = f" (+{len(names) - _REPORT_LIMIT} more)" if len(names) > _REPORT_LIMIT else ""
                parts.append(f"{label} ({len(names)}): {shown}{more}")
        if parts:
            raise CheckpointError(
                f"{model_dir} does not match the Qwen3 architecture in {source}; "
                + "; ".join(parts)
            )


def safetensors_files(model_dir: Path) -> list[Path]:
    """The shard files of a checkpoint, from the index when there is one."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from None
        files = sorted({model_dir / name for name in weight_map.values()})
        absent = [str(f.name) for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index} names shards that are not on disk: {', '.join(absent)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir} holds no *.safetensors weights")
    return files


def _open_all(files: Sequence[Path]) -> Iterator[tuple[str, object]]:
    """(key, open handle) for every tensor of every shard."""
    for path in files:
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
        for key in handle.keys():
            yield key, handle


def _canonical(key: str) -> str:
    return key[len(_PREFIX) :] if key.startswith(_PREFIX) else key


def _check_tensors(
    located: dict[str, tuple[str, object]], expected: dict[str, torch.Size], model_dir: Path
) -> None:
    problems = _Problems()
    for name, (key, handle) in located.items():
        if name not in expected:
            problems.unexpected.append(key)
            continue
        shape = tuple(handle.get_slice(key).get_shape())
        if shape != tuple(expected[name]):
            problems.misshaped.append(f"{key} {list(shape)} != {list(expected[name])}")
    problems.missing = [name for name in expected if name not in located]
    problems.raise_if_any(model_dir)


def _head_rows(
    located: dict[str, tuple[str, object]],
    lm_head: tuple[str, object] | None,
    rows: Sequence[int],
    config: Qwen3Config,
    model_dir: Path,
) -> Tensor:
    """Only the asked-for rows of lm_head (or of the tied embedding), read by slice."""
    if lm_head is None:
        if not config.tie_word_embeddings:
            raise CheckpointError(
                f"{model_dir} has no {_LM_HEAD} and tie_word_embeddings is false: "
                "a reranker needs the language-model head"
            )
        lm_head = located["embed_tokens.weight"]
    key, handle = lm_head
    sliced = handle.get_slice(key)
    vocab = sliced.get_shape()[0]
    for row in rows:
        if row >= vocab:
            raise CheckpointError(f"{model_dir}: {key} has {vocab} rows, token {row} is beyond it")
    return torch.cat([sliced[row : row + 1] for row in rows], dim=0)


def _owned(mapped: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A tensor of the file on `device` in `dtype`, in memory of its own. get_tensor's is backed by
    the file's memory map, and with the file's dtype on a CPU `.to` returns it as it is: one such
    tensor left in the model (the final norm's 2 KB weight) kept the whole file mapped, and every
    page of it that loading read resident (the 0.6B: 1.27 GB of file pages beside a 0.9 GB int8
    model; bench/quantized.py)."""
    tensor = mapped.to(device=device, dtype=dtype)
    return tensor.clone() if tensor.data_ptr() == mapped.data_ptr() else tensor


def load_qwen3_dir(
    model_dir: Path,
    *,
    max_length: int,
    dtype: torch.dtype,
    device: torch.device,
    reranker: bool = False,
) -> LoadedQwen3:
    """Tokenizer and decoder from a local directory; `reranker` also keeps the (no, yes) rows of lm_head."""
    tokenizer = Qwen3Tokenizer.from_dir(model_dir, max_length)
    config = qwen3_config_from_dict(read_config_json(model_dir), where=str(model_dir / "config.json"))
    with torch.device("meta"):
        model = Qwen3Model(config)
    expected = {name: t.shape for name, t in model.state_dict().items()}

    located: dict[str, tuple[str, object]] = {}
    lm_head = None
    for key, handle in _open_all(safetensors_files(model_dir)):
        name = _canonical(key)
        if name == _LM_HEAD:
            lm_head = (key, handle)
        elif not name.endswith(_IGNORED_SUFFIXES):
            located[name] = (key, handle)
    _check_tensors(located, expected, model_dir)

    state = {name: _owned(handle.get_tensor(key), device, dtype) for name, (key, handle) in located.items()}
    model.load_state_dict(state, assign=True, strict=True)
    model.eval().requires_grad_(False)
    rows = None
    if reranker:
        rows = _head_rows(located, lm_head, tokenizer.yes_no_ids, config, model_dir).to(device=device, dtype=dtype)
    return LoadedQwen3(config=config, model=model, tokenizer=tokenizer, head_rows=rows)
