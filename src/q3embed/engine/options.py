"""The one options object: which model loads, where, in what precision, and how it batches.

The Python API (`Embedder(model, **fields)`, `Reranker(...)`), the engine (`EngineOptions`), the
CLI (every model flag is a field here, with its Q3EMBED_* twin), embed-corpus, evaluation and
parity all take a `ModelOptions`; nothing is read from the environment inside the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, RequestTooLargeError
from ..weights.hubs import HUB_NAMES

if TYPE_CHECKING:  # torch is imported where a model is placed, not where options are written
    import torch

__all__ = ["ModelOptions", "EngineOptions", "QueueLimits", "model_options", "DEFAULT_MAX_BATCH_TOKENS",
           "DEFAULT_MAX_QUEUED_TOKENS", "DEFAULT_MAX_REQUEST_TOKENS", "SPECIAL_TOKEN_MODES", "COMPILE_MODES",
           "CPU_BATCH_TOKENS", "GPU_BATCH_TOKENS", "GPU_MIN_BATCH_TOKENS", "GPU_MAX_BATCH_TOKENS",
           "ATTENTION_MODES", "QUANTIZE_MODES"]

# Tokens per packed forward pass when max_batch_tokens is None (auto). On a CPU a batch of 2,048
# tokens ran faster than one of 8,192 (bench/batch_budget.py, 2-core Xeon with AMX, 0.6B: 412-506
# vs 356-370 tokens/s, interleaved) and takes a few seconds instead of ~20, which is also how long a
# short request can wait behind a long one; a GPU wants large batches.
CPU_BATCH_TOKENS = 2048
GPU_BATCH_TOKENS = 8192  # what a QueueLimits holds before a device is known
# On a GPU the budget is sized from the memory free after loading (device.gpu_batch_tokens), within:
GPU_MIN_BATCH_TOKENS = 2048
GPU_MAX_BATCH_TOKENS = 32768
DEFAULT_MAX_BATCH_TOKENS = GPU_BATCH_TOKENS
SPECIAL_TOKEN_MODES = ("parse", "plain")
COMPILE_MODES = ("auto", "on", "off", "max")  # see engine/device.resolve_compile
# see model/attention.py (kept equal to its ATTENTION_CHOICES)
ATTENTION_MODES = ("auto", "sdpa", "varlen", "cpu-kernel")
QUANTIZE_MODES = ("none", "int8")  # see model/quantized.py
DEFAULT_MAX_QUEUED_TOKENS = 262_144  # 32 full batches of 8192 tokens
# One request may hold this many tokens: OpenAI's 2,048 inputs of 64 tokens; larger ones are refused
# (413), since even interleaved with other clients' batches they would hold memory for minutes.
DEFAULT_MAX_REQUEST_TOKENS = 131_072


@dataclass(frozen=True)
class ModelOptions:
    model: str = "auto"  # a local directory, a .gguf file, a hub id, or auto
    device: str | torch.device = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str | torch.dtype = "auto"  # auto, float32, bfloat16, float16
    max_length: int | None = None  # longest input in tokens (None: the model's; 8192 for Qwen3)
    # tokens per packed forward pass (None: CPU_BATCH_TOKENS on a CPU, sized from free memory on a GPU)
    max_batch_tokens: int | None = None
    # auto, on, off: the decoder's fused kernels (see model.kernels; where q3embed's own CPU kernels
    # run, bf16 on AVX512-BF16 without AMX, those run instead, with nothing to compile); max: also
    # whole-decoder graphs for one short sequence on a CPU (model.graphs: faster interactive
    # queries, minutes to compile at start). On a GPU short sequences run in CUDA graphs unless off.
    compile: str = "auto"
    # how attention runs over a packed batch: auto (varlen FlashAttention on a GPU in bf16/fp16,
    # cpu-kernel on a CPU where q3embed's kernels run, else sdpa), sdpa (one call per sequence),
    # varlen, cpu-kernel (see model/attention.py)
    attention: str = "auto"
    # none (the exact model) or int8: the decoder's matrix products as int8 on a CPU (model/quantized.py:
    # faster single queries, an approximation whose cosine against the exact model is reported)
    quantize: str = "none"
    threads: int | None = None  # CPU threads for torch (None: every CPU this process may use)
    # on a CPU, the decoder's weights moved into 2 MB pages after loading (engine/memory.py: single
    # queries ~10% faster; the first touch of the pages costs seconds per GB in some VMs)
    huge_pages: bool = True
    # "<|im_end|>" typed in a text: parse = the control token, as the model card's tokenizer call does
    # (parity); plain = the characters, so an untrusted document cannot close the reranker's prompt
    special_tokens: str = "parse"
    # where a bare hub id downloads from (its cache is searched first, then the other hub's):
    # huggingface (HF_ENDPOINT names a mirror) or modelscope (pip install 'q3embed[modelscope]')
    hub: str = "huggingface"

    def __post_init__(self) -> None:
        if self.hub not in HUB_NAMES:
            raise ConfigurationError(f"hub must be one of {', '.join(HUB_NAMES)}, got {self.hub!r}")
        if self.quantize not in QUANTIZE_MODES:
            raise ConfigurationError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {self.quantize!r}")
        if str(self.attention).strip().lower() not in ATTENTION_MODES:
            raise ConfigurationError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {self.attention!r}")
        if self.special_tokens not in SPECIAL_TOKEN_MODES:
            raise ConfigurationError(f"special_tokens must be one of {', '.join(SPECIAL_TOKEN_MODES)}, "
                                     f"got {self.special_tokens!r}")
        size = self.max_batch_tokens
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigurationError(f"max_batch_tokens must be a positive integer, got {size!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigurationError(f"threads must be a positive integer, got {self.threads!r}")
        if not isinstance(self.huge_pages, bool):
            raise ConfigurationError(f"huge_pages must be true or false, got {self.huge_pages!r}")

    def with_model(self, model: str) -> "ModelOptions":
        """The same placement and limits for another model (e.g. the reranker next to the embedder)."""
        return replace(self, model=model)


_FIELDS = frozenset(f.name for f in fields(ModelOptions))


def model_options(model: "str | os.PathLike[str] | ModelOptions", overrides: Mapping[str, Any]) -> ModelOptions:
    """What `Embedder(model, **overrides)` means: a model id, a path (str or pathlib.Path) or a
    ModelOptions, then keyword fields."""
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise ConfigurationError(f"unknown option {', '.join(unknown)}: the options are {', '.join(sorted(_FIELDS))}")
    if isinstance(model, ModelOptions):
        return replace(model, **overrides)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise ConfigurationError(f"model must be a path, a hub id or auto (a string or a pathlib.Path), "
                                 f"not {type(model).__name__}")
    return ModelOptions(model=model, **overrides)


@dataclass(frozen=True)
class QueueLimits:
    """How much work the engine's worker holds: per batch, and waiting in its queue."""

    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_queued_requests: int = 256
    max_queued_tokens: int = DEFAULT_MAX_QUEUED_TOKENS
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS

    def check_request(self, tokens: int) -> None:
        """RequestTooLargeError for one request over max_request_tokens, naming the limit and its flag."""
        if tokens > self.max_request_tokens:
            raise RequestTooLargeError(
                f"the request is {tokens} tokens, over this server's limit of {self.max_request_tokens} per "
                "request (--max-request-tokens): split it into smaller requests")


@dataclass(frozen=True)
class EngineOptions:
    """Everything that decides which models an Engine loads and how it queues work."""

    models: ModelOptions = field(default_factory=ModelOptions)  # the embedding model, and the reranker's placement
    reranker: str | None = "auto"  # None: serve no reranker
    max_queued_requests: int = 256
    max_queued_tokens: int = DEFAULT_MAX_QUEUED_TOKENS
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS

    def limits(self, max_batch_tokens: int) -> QueueLimits:
        """The queue's limits around batches of `max_batch_tokens` (the embedder's, once resolved)."""
        return QueueLimits(max_batch_tokens, self.max_queued_requests, self.max_queued_tokens, self.max_request_tokens)
