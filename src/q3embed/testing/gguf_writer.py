"""Write a Qwen3 safetensors checkpoint to GGUF the way llama.cpp's convert_hf_to_gguf.py does.

Used by the tests (tiny random models) and the benchmark (full-size random models) to make GGUF
files offline, with the `gguf` package's own writer and quantizers:

- hyper-parameters under `qwen3.*`, the tokenizer as `tokenizer.ggml.*` (model "gpt2", pre-tokenizer
  "qwen2", tokens, token types, merges, special token ids via `gguf.SpecialVocab`);
- tensors under llama.cpp's names (`gguf.get_tensor_name_map`), Q/K *not* permuted: Qwen2/Qwen3 use
  the NEOX (rotate_half) RoPE in llama.cpp, so the converter writes them as they are;
- 1-D tensors (norms) stay F32, 2-D ones take the file type, falling back to F16 for a row length
  that is not a multiple of the block size (as llama.cpp does);
- rerankers get `pooling_type = RANK`, `classifier.output_labels = ["yes", "no"]` and the two
  lm_head rows as `cls.output.weight` ([yes, no], as the converter's `_get_cls_out_tensor` writes),
  or, for files made by converters that did not know rerankers, the plain `output.weight`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

from ..weights.checkpoint import safetensors_files
from ..weights.config_json import qwen3_config_from_dict, read_config_json

__all__ = ["FILE_TYPES", "write_gguf"]

FileType = Literal["F32", "F16", "BF16", "Q8_0"]
FILE_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
_CLS_OUT = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.CLS_OUT] + ".weight"  # "cls.output.weight"


def _looks_special(token: str) -> bool:
    # llama.cpp's does_token_look_special: `<|...|>` added tokens become CONTROL even when
    # tokenizer.json does not mark them special.
    return token.startswith("<|") and token.endswith("|>")


def _vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types by id, as llama.cpp's get_vocab_base lists them."""
    raw = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {index: token for token, index in raw["model"]["vocab"].items()}
    added = {entry["id"]: entry for entry in raw["added_tokens"]}
    by_id.update({index: entry["content"] for index, entry in added.items()})
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for index in range(size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = by_id[index]
        tokens.append(token)
        if index in added:
            special = added[index]["special"] or _looks_special(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _write_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    tokens, types = _vocab(model_dir, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)


def _write_hparams(writer: gguf.GGUFWriter, model_dir: Path, kind: str, file_type: FileType) -> None:
    cfg = qwen3_config_from_dict(read_config_json(model_dir), where=str(model_dir / "config.json"))
    writer.add_name(model_dir.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_file_type(FILE_TYPES[file_type][1])
    if kind == "reranker":
        writer.add_pooling_type(gguf.PoolingType.RANK)
        writer.add_classifier_output_labels(["yes", "no"])
    else:
        # From the sentence-transformers Pooling config of the embedding repos: last token.
        writer.add_pooling_type(gguf.PoolingType.LAST)


def _encode(array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """A float32 array [rows, cols] in the file's type; 1-D tensors and odd rows as llama.cpp keeps them."""
    if array.ndim == 1:
        return array, gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if array.shape[-1] % block:
        qtype = gguf.GGMLQuantizationType.F16
    if qtype == gguf.GGMLQuantizationType.F32:
        return array, qtype
    return gguf.quants.quantize(array, qtype), qtype


def _head_tensors(state: dict[str, torch.Tensor], kind: str, reranker_head: str,
                  yes_no: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Extra tensors after the decoder: cls.output [yes, no] rows, or output (= lm_head)."""
    lm_head = state.pop("lm_head.weight", None)
    if kind != "reranker":
        return {}
    head = lm_head if lm_head is not None else state["embed_tokens.weight"]  # tied
    if reranker_head == "cls":
        yes, no = yes_no
        return {_CLS_OUT: torch.stack([head[yes], head[no]])}  # [2, hidden]
    return {} if lm_head is None else {"output.weight": lm_head}


def _yes_no_ids(model_dir: Path) -> tuple[int, int]:
    vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    return vocab["yes"], vocab["no"]


def write_gguf(
    model_dir: Path,
    out_path: Path,
    *,
    file_type: FileType = "F16",
    kind: Literal["embedding", "reranker"] = "embedding",
    reranker_head: Literal["cls", "output"] = "cls",
) -> Path:
    """Convert the safetensors checkpoint in `model_dir` into one GGUF file at `out_path`."""
    qtype = FILE_TYPES[file_type][0]
    state: dict[str, torch.Tensor] = {}
    for path in safetensors_files(model_dir):
        state.update({k.removeprefix("model."): v for k, v in load_file(str(path)).items()})
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, n_blocks)
    extra = _head_tensors(state, kind, reranker_head, _yes_no_ids(model_dir))

    writer = gguf.GGUFWriter(str(out_path), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    _write_hparams(writer, model_dir, kind, file_type)
    _write_tokenizer(writer, model_dir, state["embed_tokens.weight"].shape[0])
    tensors = {names.get_name(f"model.{k}", try_suffixes=(".weight", ".bias")): v for k, v in state.items()}
    for name, tensor in {**tensors, **extra}.items():
        data, stored = _encode(tensor.float().numpy(), qtype)
        writer.add_tensor(name, data, raw_dtype=stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path
