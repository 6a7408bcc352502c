"""The GPU run: parity of the CUDA path, and q3embed against sentence-transformers on one GPU.

    python bench/gpu.py --prepare                      # here, with the dev install: carry files
    python bench/gpu.py --out $OUT/gpu.json            # on the GPU machine (bench/.gpu carried)
    python bench/gpu.py --device cpu --sizes tiny      # the same script, checked on a CPU

Needs only torch, transformers, sentence-transformers, tokenizers, safetensors and numpy: q3embed
is read from src/, and the two things the GPU machine lacks come from bench/.gpu (made by
--prepare): the Qwen3 tokenizer files, and the few pure-Python packages q3embed's engine imports
(lazy_loader, gguf). Random-weight checkpoints of each size are drawn on the device itself
(speed does not depend on weight values) and written under --work.

In one run, written to one JSON file after every step (a run cut short keeps what it measured):
- parity on the tiny checkpoint: cosine of the CUDA path's vectors against the transformers
  reference computed on the CPU in fp32, for fp32 (SDPA), bf16 varlen, bf16 SDPA and single texts
  through the CUDA graphs; the reranker's scores (prefix reuse through varlen) against the CPU's;
- per size (0.6B, 4B, 8B): tokens/s of q3embed and of sentence-transformers (sdpa, bf16, its own
  length-sorted batches, best of two batch sizes) on the same texts, the ratio, the cosine
  between their vectors; single-query latency (default instruction, ~27 tokens) with and without
  CUDA graphs and for sentence-transformers; peak GPU memory of each; q3embed's token budget.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CARRIED = HERE / ".gpu"  # --prepare writes it; carried to the GPU machine with the working tree
sys.path[:0] = [str(HERE), str(HERE.parent / "src"), str(CARRIED / "site")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

# What q3embed's engine imports beyond the GPU machine's packages (pure Python, no dependencies
# of their own that it lacks); --prepare installs them into bench/.gpu/site.
CARRIED_PACKAGES = ["lazy_loader", "gguf"]
TOKENS_PER_SIZE = {"tiny": 20_000, "0.6B": 600_000, "4B": 200_000, "8B": 120_000}
QUERIES = ["What is the capital of China?", "how do vaccines train the immune system", "best way to learn rust",
           "Explain gravity", "symptoms of dehydration in adults", "who wrote the theory of relativity",
           "python sort a dict by value", "difference between TCP and UDP", "what causes inflation",
           "how tall is mount everest", "recipe for sourdough bread", "why is the sky blue",
           "what is a vector database", "meaning of the word ephemeral", "how many moons does jupiter have",
           "convert celsius to fahrenheit", "history of the printing press", "what is photosynthesis",
           "fastest land animal", "how to reset a router"]


def prepare() -> None:
    """Copy the tokenizer files and install the carried packages into bench/.gpu (run here)."""
    from q3embed.testing.checkpoints import qwen_tokenizer_dir

    tokenizer = CARRIED / "tokenizer"
    tokenizer.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(qwen_tokenizer_dir() / name, tokenizer / name)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in CARRIED_PACKAGES]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
                    "--target", str(CARRIED / "site"), *pins], check=True)
    size = sum(f.stat().st_size for f in CARRIED.rglob("*") if f.is_file()) / 2**20
    print(f"{CARRIED}: tokenizer + {', '.join(pins)} ({size:.1f} MiB); carry bench/.gpu")


# ---------------------------------------------------------------------------- inputs


def docstrings(count: int) -> list[str]:
    """Real English of mixed length: docstrings of the standard library (present on any Python)."""
    from common import stdlib_docstrings  # bench/common.py, beside this file

    return stdlib_docstrings(count)


def token_counts(model_dir: Path, texts: list[str]) -> list[int]:
    """Tokens the model sees per text: its tokenizer.json appends <|endoftext|>, as q3embed does."""
    from tokenizers import Tokenizer

    return [len(e.ids) for e in Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode_batch(texts)]


def texts_for(model_dir: Path, tokens: int) -> tuple[list[str], int]:
    """Docstrings, repeated if need be, until they hold about `tokens` tokens; and how many."""
    pool = docstrings(2000)
    counts = token_counts(model_dir, pool)
    chosen, total = [], 0
    while total < tokens:
        for text, count in zip(pool, counts, strict=True):
            chosen.append(text)
            total += count
            if total >= tokens:
                break
    return chosen, total


def checkpoint(work: Path, shape: str, kind: str, dtype: torch.dtype, device: str) -> Path:
    from q3embed.testing.checkpoints import CheckpointSpec, build_checkpoint

    out = work / f"qwen3-{kind}-{shape}-{str(dtype).removeprefix('torch.')}"
    if not (out / "config.json").is_file():
        started = time.perf_counter()
        spec = CheckpointSpec(kind=kind, shape=shape, dtype=dtype, device=device,
                              prefixed_keys=kind == "reranker", tied_lm_head=kind == "reranker",
                              eos_post_processor=kind == "embedding")
        tokenizer = CARRIED / "tokenizer"
        build_checkpoint(out, spec, tokenizer_dir=tokenizer if tokenizer.is_dir() else None)
        print(f"built {out.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return out


# ---------------------------------------------------------------------------- measuring


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def seconds(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_ms(fn, device: str, items: list, rounds: int = 3) -> float:
    for item in items[:3]:
        fn(item)
    return 1000 * statistics.median(seconds(lambda i=item: fn(i), device) for _ in range(rounds) for item in items)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-300, 1.0)
    return np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))


def reference_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The model card's computation in transformers, fp32 on the CPU: left padding, last token."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=8192, return_tensors="pt")
        return model(**batch).last_hidden_state[:, -1].numpy()


def attempt(report: dict, name: str, run) -> None:
    """report[name] = run(), or the error it raised: one failing backend does not hide the others."""
    try:
        report[name] = run()
    except Exception as exc:  # noqa: BLE001
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"parity {name}: {report[name]}", flush=True)


def parity(work: Path, device: str) -> dict:
    from q3embed import Embedder, Reranker

    tiny = checkpoint(work, "tiny", "embedding", torch.float32, "cpu")
    texts = docstrings(48) + QUERIES
    reference = reference_embeddings(tiny, texts)
    report: dict = {"texts": len(texts)}
    half = "bfloat16" if device == "cpu" or torch.cuda.is_bf16_supported() else "float16"

    def embedding(dtype: str, attention: str) -> dict:
        embedder = Embedder(str(tiny), device=device, dtype=dtype, attention=attention)
        batch = embedder.encode(texts)
        singles = np.stack([embedder.encode(text) for text in texts[:12]])  # one text each: the graphs
        return {"attention": embedder.info.attention, "min_cosine": float(cosines(batch, reference).min()),
                "single_text_min_cosine": float(cosines(singles, reference[:12]).min()),
                "graph_runs": getattr(embedder._backend.graphs, "runs", 0)}  # noqa: SLF001

    for name, (dtype, attention) in {"fp32": ("float32", "auto"), f"{half} auto": (half, "auto"),
                                     f"{half} sdpa": (half, "sdpa")}.items():
        attempt(report, name, lambda d=dtype, a=attention: embedding(d, a))

    ranker_dir = checkpoint(work, "tiny", "reranker", torch.float32, "cpu")
    documents = docstrings(24)
    expected = np.array(Reranker(str(ranker_dir), device="cpu", dtype="float32", compile="off").score(QUERIES[0],
                                                                                                      documents))

    def reranking(dtype: str) -> dict:
        reranker = Reranker(str(ranker_dir), device=device, dtype=dtype)
        got = np.array(reranker.score(QUERIES[0], documents))
        # Random weights give scores near 0 or 1, where P(yes) hides every difference: compare log-odds.
        return {"attention": reranker.info.attention, "max_abs_score_difference": float(np.abs(got - expected).max()),
                "max_abs_log_odds_difference": float(np.abs(log_odds(got) - log_odds(expected)).max()),
                "cpu_fp32_log_odds_range": [float(log_odds(expected).min()), float(log_odds(expected).max())]}

    for dtype in ("float32", half):
        attempt(report, f"reranker {dtype}", lambda d=dtype: reranking(d))
    return report


def ours(model_dir: Path, device: str, texts: list[str], tokens: int) -> tuple[dict, np.ndarray]:
    from q3embed import Embedder

    reset_peak(device)
    started = time.perf_counter()
    embedder = Embedder(str(model_dir), device=device, dtype="bfloat16")
    embedder.warm_up()  # captures the CUDA graphs
    load = time.perf_counter() - started
    embedder.encode(texts[:64])
    elapsed = seconds(lambda: embedder.encode(texts), device)
    vectors = embedder.encode(texts[:256])
    with_graphs = median_ms(lambda q: embedder.encode_queries([q]), device, QUERIES)
    result = {"tokens_per_s": tokens / elapsed, "seconds": elapsed, "load_and_warm_up_s": load,
              "max_batch_tokens": embedder.max_batch_tokens, "attention": embedder.info.attention,
              "single_query_ms": with_graphs, "peak_gpu_gb": peak_gb(device),
              "query_tokens": len(embedder.tokenize(QUERIES[0], query=True)[0])}
    embedder = None  # frees its GPU memory before the next one loads
    reset_peak(device)
    eager = Embedder(str(model_dir), device=device, dtype="bfloat16", compile="off")
    result["single_query_ms_without_graphs"] = median_ms(lambda q: eager.encode_queries([q]), device, QUERIES)
    eager = None
    return result, vectors


def sentence_transformers(model_dir: Path, device: str, texts: list[str], tokens: int) -> tuple[dict, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    reset_peak(device)
    model = SentenceTransformer(str(model_dir), device=device,
                                model_kwargs={"dtype": torch.bfloat16, "attn_implementation": "sdpa"})
    model.max_seq_length = 8192
    model.encode(texts[:64], batch_size=32)
    rates = {}
    for batch_size in (32, 128):
        elapsed = seconds(lambda b=batch_size: model.encode(texts, batch_size=b), device)
        rates[str(batch_size)] = tokens / elapsed
    vectors = model.encode(texts[:256], batch_size=32)
    prompt = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
    single = median_ms(lambda q: model.encode([prompt + q]), device, QUERIES)
    result = {"tokens_per_s": max(rates.values()), "tokens_per_s_by_batch_size": rates, "single_query_ms": single,
              "peak_gpu_gb": peak_gb(device), "version": importlib.metadata.version("sentence-transformers")}
    model = None
    reset_peak(device)
    return result, vectors


def measure_size(work: Path, shape: str, device: str) -> dict:
    model_dir = checkpoint(work, shape, "embedding", torch.bfloat16, device)
    texts, tokens = texts_for(model_dir, TOKENS_PER_SIZE[shape])
    report: dict = {"texts": len(texts), "tokens": tokens}
    report["q3embed"], our_vectors = ours(model_dir, device, texts, tokens)
    print(f"{shape} q3embed: {report['q3embed']}", flush=True)
    report["sentence_transformers"], st_vectors = sentence_transformers(model_dir, device, texts, tokens)
    print(f"{shape} sentence-transformers: {report['sentence_transformers']}", flush=True)
    report["ratio_tokens_per_s"] = report["q3embed"]["tokens_per_s"] / report["sentence_transformers"]["tokens_per_s"]
    report["cosine_q3embed_vs_st_min"] = float(cosines(our_vectors, st_vectors).min())
    if device != "cpu":  # a size's files are not needed again; the disk is small
        shutil.rmtree(model_dir, ignore_errors=True)
    return report


def environment(device: str) -> dict:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "device": device,
           "transformers": importlib.metadata.version("transformers")}
    if device.startswith("cuda"):
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                   memory_gb=torch.cuda.get_device_properties(0).total_memory / 2**30)
    from q3embed.model.attention import varlen_attention_function

    env["varlen_attn"] = varlen_attention_function() is not None
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="write bench/.gpu for the GPU machine, then stop")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="0.6B,4B,8B", help="comma-separated: tiny, 0.6B, 4B, 8B")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu.json"))
    parser.add_argument("--work", default="/tmp/q3embed-gpu-bench", help="where checkpoints are written")
    parser.add_argument("--budget-s", type=float, default=280.0,
                        help="start no further size past this many seconds (the run must fit its slot)")
    args = parser.parse_args()
    if args.prepare:
        prepare()
        return
    started = time.perf_counter()
    work = Path(args.work)
    report: dict = {"environment": environment(args.device), "sizes": {}}

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - started
        Path(args.out).write_text(json.dumps(report, indent=2))

    for step, run in [("parity", lambda: parity(work, args.device))]:
        try:
            report[step] = run()
        except Exception as exc:  # noqa: BLE001 - keep measuring the rest, say what failed
            report[step] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{step} failed: {exc}", flush=True)
        save()
    for shape in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if time.perf_counter() - started > args.budget_s:
            report["sizes"][shape] = {"skipped": f"past --budget-s {args.budget_s:.0f}"}
            continue
        try:
            report["sizes"][shape] = measure_size(work, shape, args.device)
        except Exception as exc:  # noqa: BLE001
            report["sizes"][shape] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{shape} failed: {exc}", flush=True)
        reset_peak(args.device)
        save()
    save()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
