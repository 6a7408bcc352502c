"""Flags and helpers that several commands share, so scripts can pass the same flags everywhere."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine import (
    ATTENTION_MODES,
    COMPILE_MODES,
    CPU_BATCH_TOKENS,
    GPU_MAX_BATCH_TOKENS,
    GPU_MIN_BATCH_TOKENS,
    QUANTIZE_MODES,
    SPECIAL_TOKEN_MODES,
    ModelOptions,
)
from ..weights.hubs import HUB_NAMES
from .env import ENV_PREFIX

__all__ = ["PROG", "DTYPES", "positive_int", "non_negative_int", "add_model_flags", "add_query_flags", "subparser",
           "model_options"]

PROG = "q3embed"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _integer(text: str, minimum: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (sizes, lengths and counts are never zero or negative)."""
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (an overlap may be none)."""
    return _integer(text, 0, "0 or more")


def add_model_flags(parser: argparse.ArgumentParser, *, what: str = "embedding") -> None:
    """The flags that pick and place a model; the same on every command so scripts can share them."""
    model = parser.add_argument(
        "--model", metavar="MODEL", default="auto",
        help=f"{what} model: a local directory or .gguf file; a hub id (repo:QUANT for one GGUF file; "
        "modelscope:ID or huggingface:ID picks the hub), found in the local caches before any download; "
        "ollama:NAME[:TAG] for a model Ollama has pulled; or auto (default: auto; "
        + ("Qwen/Qwen3-Reranker-0.6B if cached or downloadable, else cosine similarity of embeddings)"
           if what == "reranker" else
           "Qwen/Qwen3-Embedding-0.6B if in any cache or downloadable, else the bundled all-MiniLM-L6-v2)"))
    if what == "reranker":
        model.env_var = ENV_PREFIX + "RERANKER"  # type: ignore[attr-defined]  # Q3EMBED_MODEL names the embedder
    parser.add_argument("--device", metavar="DEVICE", default="auto",
                        help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="precision; auto = bfloat16 on GPUs and on CPUs with native bf16, "
                        "float32 on other CPUs (default: auto)")
    parser.add_argument("--max-length", type=positive_int, metavar="N",
                        help="longest input in tokens; longer ones are cut (default: the model's, 8192 for Qwen3)")
    parser.add_argument("--max-batch-tokens", type=positive_int, metavar="N",
                        help="tokens per forward pass; lower it if memory runs out (default: "
                        f"{CPU_BATCH_TOKENS} on a CPU; on a GPU what a third of its free memory holds, "
                        f"{GPU_MIN_BATCH_TOKENS}-{GPU_MAX_BATCH_TOKENS})")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                        help="fuse the decoder's norm and RoPE kernels with torch.compile (~8-12%% faster on CPU): "
                        "auto = once a model has run 16k tokens, and at start-up for a server, on CPUs with a C++ "
                        "compiler; on / off force it (where q3embed's own CPU kernels run, bf16 on AVX512-BF16 without "
                        "AMX, those run instead: nothing to compile); max = on, plus whole-decoder graphs for one "
                        "short query "
                        "(16- and 32-token graphs; short single texts ~1.4x faster, ~3.5 minutes to compile at start, "
                        "a packed copy of the weights per graph; CPU). On a GPU one short text runs in a CUDA "
                        "graph (up to 512 tokens) unless off (default: auto)")
    parser.add_argument("--attention", choices=ATTENTION_MODES, default="auto",
                        help="attention over a packed batch: varlen = one FlashAttention call per layer (CUDA, "
                        "bf16/fp16, torch >= 2.9); cpu-kernel = q3embed's own, one call per layer (bf16 on an "
                        "AVX512-BF16 CPU without AMX; sequences up to 4,096 tokens, SDPA beyond); sdpa = one call "
                        "per sequence; auto = varlen on a GPU, cpu-kernel where it runs, else sdpa (default: auto)")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default="none",
                        help="int8 = the decoder's matrix products in int8 on a CPU (int8 weights and activations: "
                        "Q8_0 blocks times Q8_0 inputs on AVX512-BF16/VNNI CPUs, else fbgemm; faster, an "
                        "approximation: its cosine against the exact model is in docs/benchmarks.md); "
                        "not with --compile max (default: none, the exact model)")
    parser.add_argument("--special-tokens-in-text", choices=SPECIAL_TOKEN_MODES, default="parse",
                        help="'<|im_end|>' and the like inside texts: parse = the model's control tokens, as the "
                        "model card's tokenizer call does; plain = ordinary characters, so untrusted text "
                        "cannot close the reranker's prompt (default: parse)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads for the model (default: every CPU this process may use, "
                        "container quota included)")
    parser.add_argument("--no-huge-pages", dest="huge_pages", action="store_false",
                        help="keep the weights on the 4 KB pages they load into (default on a CPU: moved into "
                        "2 MB pages, ~10%% faster single queries; the move costs seconds per GB at start in "
                        "some VMs)")
    parser.add_argument("--hub", choices=HUB_NAMES, default="huggingface",
                        help="where a bare hub id downloads from; both hubs' caches are searched first either "
                        "way: huggingface (HF_ENDPOINT names a mirror) or modelscope (needs "
                        "pip install 'q3embed[modelscope]') (default: huggingface)")


def subparser(sub: Any, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_query_flags(parser: argparse.ArgumentParser, first: str = "texts") -> None:
    parser.add_argument("--query", action="store_true",
                        help=f"embed the {first} as search queries (wrapped in the model's query prompt)")
    parser.add_argument("--instruction", metavar="TEXT",
                        help="task instruction for the query prompt; implies --query "
                        "(default: the model card's web-search instruction)")
    parser.add_argument("--dimensions", type=positive_int, metavar="N",
                        help="keep the first N dimensions (Matryoshka), from 32 to the model's size")



def model_options(args: argparse.Namespace, model: str | None = None) -> ModelOptions:
    """The model flags as the one options object; `model` names another model with the same placement
    (e.g. --reranker next to --model)."""
    return ModelOptions(model=args.model if model is None else model, device=args.device, dtype=args.dtype,
                        max_length=args.max_length, max_batch_tokens=args.max_batch_tokens,
                        compile=getattr(args, "compile", "auto"), attention=getattr(args, "attention", "auto"),
                        quantize=getattr(args, "quantize", "none"),
                        threads=args.threads, huge_pages=getattr(args, "huge_pages", True),
                        special_tokens=getattr(args, "special_tokens_in_text", "parse"),
                        hub=getattr(args, "hub", "huggingface"))
