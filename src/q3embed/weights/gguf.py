"""GGUF files (llama.cpp, Ollama, the official `*-GGUF` repos) -> the same Qwen3Model and tokenizer
as the safetensors path.

- Hyper-parameters come from the `qwen3.*` metadata, the tokenizer from `tokenizer.ggml.*`
  (text/gguf_tokenizer.py), the weights from llama.cpp's tensor names (`token_embd`,
  `blk.N.attn_q`, ..., `output_norm`) mapped to our keys with the `gguf` package's own name map.
- Q and K are used as stored: llama.cpp permutes them only for the LLAMA rope layout, while
  Qwen2/Qwen3 use the NEOX (rotate_half) layout that matches ours, and their converter writes them
  unpermuted.
- F32/F16/BF16 are cast, Q8_0/Q4_K/Q5_K/Q6_K dequantized with `gguf.quants`, into the engine's
  dtype; the engine then runs exactly as for safetensors. Except Q8_0 in bf16 on a CPU where
  q3embed's CPU kernels are preferred (AVX512-BF16 without AMX): the decoder's Q8_0 linear layers
  stay blocks (model/block_linear.py, a kernel of our own, the same products as the dequantized
  model's) and the embedding table stays Q8_0 (model/quantized.Int8Embedding), so the model holds
  about the file's size.
- Rerankers: the yes/no rows come from `cls.output.weight` (what llama.cpp's converter writes for
  Qwen3-Reranker: [yes, no], labelled by `qwen3.classifier.output_labels`), else from
  `output.weight`, else from the tied `token_embd.weight`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..model.block_linear import Q8Linear, cpu_kernels_run, tiles_fit
from ..model.quantized import Int8Embedding
from ..model.qwen3 import Qwen3Config, Qwen3Model
from ..text.gguf_tokenizer import tokenizer_from_gguf
from ..text.tokenizer import Qwen3Tokenizer
from .checkpoint import LoadedQwen3, _Problems
from .gguf_file import GGUF_MAGIC, GgufFile, GgufTensor

__all__ = ["SUPPORTED_TYPES", "is_gguf_file", "gguf_qwen3_config", "tensor_to_torch", "q8_0_blocks", "load_gguf_qwen3"]

log = logging.getLogger("q3embed")

_Q = gguf.GGMLQuantizationType
SUPPORTED_TYPES = (_Q.F32, _Q.F16, _Q.BF16, _Q.Q8_0, _Q.Q4_K, _Q.Q5_K, _Q.Q6_K)
_ARCH = "qwen3"
_TOKEN_EMBD, _OUTPUT, _CLS_OUT = "token_embd.weight", "output.weight", "cls.output.weight"
_DEFAULT_LABELS = ["yes", "no"]  # the order llama.cpp's Qwen3 converter stacks the cls.output rows in
_EMBEDDING_POOLING = {int(gguf.PoolingType.MEAN), int(gguf.PoolingType.CLS), int(gguf.PoolingType.LAST)}
# Dequantize this many values at a time: the fp32 scratch stays ~64 MB, not 4 bytes x vocab x hidden.
_CHUNK_VALUES = 1 << 24


def is_gguf_file(path: Path) -> bool:
    """A `.gguf` file, or any file that starts with the GGUF magic."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _number(file: GgufFile, key: str, kind: type, default: float | None = None) -> int | float:
    value = file.metadata.get(f"{_ARCH}.{key}", default)
    if isinstance(value, list) and value and all(v == value[0] for v in value):
        value = value[0]  # per-layer arrays (head_count_kv in some files) that are uniform
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{file.path}: GGUF metadata {_ARCH}.{key} is missing or malformed ({value!r})")
    return kind(value)


def gguf_qwen3_config(file: GgufFile) -> Qwen3Config:
    """Qwen3Config from the `qwen3.*` metadata; the vocabulary size from token_embd's rows."""
    arch = file.metadata.get("general.architecture")
    if arch != _ARCH:
        raise CheckpointError(
            f"{file.path}: general.architecture is {arch!r}; q3embed runs Qwen3 GGUF files ('qwen3')"
        )
    scaling = file.metadata.get(f"{_ARCH}.rope.scaling.type")
    if scaling not in (None, "none"):
        # Plain RoPE only, as for config.json: a scaled variant would silently give wrong vectors.
        raise CheckpointError(f"{file.path}: RoPE scaling {scaling!r} is not supported")
    hidden = _number(file, "embedding_length", int)
    heads = _number(file, "attention.head_count", int)
    head_dim = _number(file, "attention.key_length", int, hidden // heads)
    rope_dims = file.metadata.get(f"{_ARCH}.rope.dimension_count", head_dim)
    value_dim = file.metadata.get(f"{_ARCH}.attention.value_length", head_dim)
    if rope_dims != head_dim or value_dim != head_dim:
        raise CheckpointError(
            f"{file.path}: head sizes key {head_dim}, value {value_dim}, RoPE {rope_dims} differ: not Qwen3"
        )
    embd = file.tensors.get(_TOKEN_EMBD)
    tokens = file.metadata.get("tokenizer.ggml.tokens") or []
    return Qwen3Config(
        vocab_size=embd.shape[0] if embd is not None else len(tokens),
        hidden_size=hidden,
        intermediate_size=_number(file, "feed_forward_length", int),
        num_hidden_layers=_number(file, "block_count", int),
        num_attention_heads=heads,
        num_key_value_heads=_number(file, "attention.head_count_kv", int, heads),
        head_dim=head_dim,
        rms_norm_eps=_number(file, "attention.layer_norm_rms_epsilon", float, 1e-6),
        rope_theta=_number(file, "rope.freq_base", float),
        max_position_embeddings=_number(file, "context_length", int, 32768),
        attention_bias="blk.0.attn_q.bias" in file.tensors,
        tie_word_embeddings=_OUTPUT not in file.tensors,
    )


def tensor_to_torch(file: GgufFile, tensor: GgufTensor, dtype: torch.dtype, rows: slice | None = None) -> Tensor:
    """A stored tensor as a torch tensor of `dtype` in torch shape ([rows, cols] for a row slice)."""
    if tensor.qtype not in SUPPORTED_TYPES:
        raise CheckpointError(
            f"{file.path}: tensor {tensor.name} is stored as {tensor.qtype.name}, which q3embed does not "
            f"read; supported types: {', '.join(t.name for t in SUPPORTED_TYPES)}"
        )
    raw = file.raw(tensor, rows)  # [r, bytes per row] uint8, memory-mapped
    cols = tensor.shape[-1]
    shape = tensor.shape if rows is None else (raw.shape[0], cols)
    if tensor.qtype == _Q.F32:
        return torch.from_numpy(raw.view(np.float32)).reshape(shape).to(dtype)
    if tensor.qtype == _Q.F16:
        return torch.from_numpy(raw.view(np.float16)).reshape(shape).to(dtype)
    if tensor.qtype == _Q.BF16:  # numpy has no bfloat16: reinterpret the 16-bit words in torch
        return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).reshape(shape).to(dtype)
    out = torch.empty((raw.shape[0], cols), dtype=dtype)
    step = max(1, _CHUNK_VALUES // cols)
    for start in range(0, raw.shape[0], step):
        values = gguf.quants.dequantize(raw[start : start + step], tensor.qtype)  # [<= step, cols] fp32
        out[start : start + step] = torch.from_numpy(values)
    return out.reshape(shape)


def q8_0_blocks(file: GgufFile, tensor: GgufTensor) -> tuple[Tensor, Tensor]:
    """A Q8_0 tensor as stored: int8 values [rows, cols] and fp16 scales [rows, cols / 32]."""
    block, block_bytes = gguf.GGML_QUANT_SIZES[_Q.Q8_0]  # 32 values: an fp16 scale, then 32 int8
    raw = file.raw(tensor)  # [rows, cols / 32 * 34] uint8, memory-mapped
    rows, cols = raw.shape[0], tensor.shape[-1]
    blocks = raw.reshape(rows, cols // block, block_bytes)
    scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16).reshape(rows, cols // block)
    values = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(rows, cols)
    return torch.from_numpy(values), torch.from_numpy(scales)


def _kept_as_blocks(model: nn.Module, located: dict[str, GgufTensor]) -> dict[str, GgufTensor]:
    """The Q8_0 tensors that stay blocks: bias-free linear layers whose sizes the kernel takes, and
    the embedding table."""
    kept = {}
    for key, tensor in located.items():
        if tensor.qtype != _Q.Q8_0 or not key.endswith(".weight"):
            continue
        module = model.get_submodule(key.removesuffix(".weight"))
        if isinstance(module, nn.Embedding) or (
                isinstance(module, nn.Linear) and module.bias is None and tiles_fit(*tensor.shape)):
            kept[key] = tensor
    return kept


def _install_blocks(model: nn.Module, file: GgufFile, kept: dict[str, GgufTensor], dtype: torch.dtype) -> None:
    """Each kept tensor's module replaced by its block form, the file's pages of it let go."""
    for key, tensor in kept.items():
        values, scales = q8_0_blocks(file, tensor)
        parent_name, _, name = key.removesuffix(".weight").rpartition(".")
        parent = model.get_submodule(parent_name)
        if isinstance(getattr(parent, name), nn.Embedding):
            setattr(parent, name, Int8Embedding(values, scales, dtype))
        else:
            setattr(parent, name, Q8Linear.from_blocks(values, scales))
        file.release(tensor)


def _gguf_names(expected: Sequence[str], layers: int) -> dict[str, str]:
    """Our state-dict key -> llama.cpp tensor name, through the gguf package's Qwen3 name map."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, layers)
    mapped = {}
    for key in expected:
        name = names.get_name(f"model.{key}", try_suffixes=(".weight", ".bias"))
        if name is None:
            raise CheckpointError(f"no GGUF tensor name is known for {key}")  # a gguf package too old
        mapped[key] = name
    return mapped


def _locate(file: GgufFile, expected: dict[str, torch.Size], layers: int) -> dict[str, GgufTensor]:
    """The GGUF tensor for each key of our model; every problem reported at once."""
    names = _gguf_names(list(expected), layers)
    problems = _Problems()
    located = {}
    for key, name in names.items():
        tensor = file.tensors.get(name)
        if tensor is None:
            problems.missing.append(name)
        elif tensor.shape != tuple(expected[key]):
            problems.misshaped.append(f"{name} {list(tensor.shape)} != {list(expected[key])}")
        else:
            located[key] = tensor
    known = set(names.values()) | {_OUTPUT, _CLS_OUT}
    problems.unexpected = [name for name in file.tensors if name not in known]
    problems.raise_if_any(file.path, source="its GGUF metadata")
    return located


def _head_rows(file: GgufFile, token_ids: Sequence[int], hidden: int, dtype: torch.dtype) -> Tensor:
    """The reranker's rows [len(token_ids), hidden], in the order of `token_ids` ((no, yes))."""
    tokens = file.metadata.get("tokenizer.ggml.tokens") or []
    if _CLS_OUT in file.tensors:
        head = file.tensors[_CLS_OUT]
        labels = file.metadata.get(f"{_ARCH}.classifier.output_labels") or _DEFAULT_LABELS
        if head.shape != (len(labels), hidden):
            raise CheckpointError(f"{file.path}: {_CLS_OUT} is {list(head.shape)}, expected [{len(labels)}, {hidden}]")
        wanted = [tokens[i] for i in token_ids]
        absent = [w for w in wanted if w not in labels]
        if absent:
            raise CheckpointError(f"{file.path}: the classifier labels {labels} lack {absent}: not a yes/no reranker")
        return tensor_to_torch(file, head, dtype)[[labels.index(w) for w in wanted]]
    head = file.tensors.get(_OUTPUT)
    if head is None:
        pooling = file.metadata.get(f"{_ARCH}.pooling_type")
        if pooling in _EMBEDDING_POOLING:
            raise CheckpointError(
                f"{file.path} is an embedding model (pooling type {gguf.PoolingType(pooling).name.lower()}) "
                f"with neither {_CLS_OUT} nor {_OUTPUT}: not a reranker"
            )
        head = file.tensors[_TOKEN_EMBD]  # tied lm_head, as llama.cpp falls back to it
    for token_id in token_ids:
        if token_id >= head.shape[0]:
            raise CheckpointError(f"{file.path}: {head.name} has {head.shape[0]} rows, token {token_id} is beyond it")
    return torch.cat([tensor_to_torch(file, head, dtype, rows=slice(i, i + 1)) for i in token_ids])


def load_gguf_qwen3(
    path: Path,
    *,
    max_length: int,
    dtype: torch.dtype,
    device: torch.device,
    reranker: bool = False,
    q8_blocks: bool = True,
) -> LoadedQwen3:
    """Tokenizer and decoder from one GGUF file; `reranker` also keeps the (no, yes) head rows.
    `q8_blocks`: keep Q8_0 tensors as blocks where the kernel is preferred (bf16 on a CPU with
    AVX512-BF16 and no AMX); False dequantizes everything."""
    file = GgufFile.open(path)
    config = gguf_qwen3_config(file)
    tokenizer = Qwen3Tokenizer(tokenizer_from_gguf(file.metadata, str(path)), max_length)
    with torch.device("meta"):
        model = Qwen3Model(config)
    expected = {name: t.shape for name, t in model.state_dict().items()}
    located = _locate(file, expected, config.num_hidden_layers)
    # The head first: a file that cannot rerank fails before the decoder is dequantized.
    rows = _head_rows(file, tokenizer.yes_no_ids, config.hidden_size, dtype).to(device) if reranker else None
    types = Counter(t.qtype.name for t in located.values())
    log.info("GGUF %s: %s", path.name, ", ".join(f"{n} x{c}" for n, c in types.most_common()))
    kept = _kept_as_blocks(model, located) if q8_blocks and cpu_kernels_run(dtype, device) else {}
    state = {}
    for key, tensor in located.items():
        if key in kept:
            continue
        state[key] = tensor_to_torch(file, tensor, dtype).to(device)
        if state[key].data_ptr() != file.data.ctypes.data + tensor.offset:  # a copy: the pages can go
            file.release(tensor)
    missing = model.load_state_dict(state, assign=True, strict=False).missing_keys
    assert set(missing) == set(kept), f"unloaded tensors {sorted(set(missing) - set(kept))}"
    _install_blocks(model, file, kept, dtype)
    if kept:
        log.info("GGUF %s: %d Q8_0 tensors kept as blocks (the Q8_0 kernel)", path.name, len(kept))
    model.eval().requires_grad_(False)
    return LoadedQwen3(config=config, model=model, tokenizer=tokenizer, head_rows=rows)
