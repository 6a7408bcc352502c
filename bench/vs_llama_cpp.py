"""q3embed against llama.cpp (llama-cpp-python) on the same texts, each engine in its own process.

    python bench/vs_llama_cpp.py --setup              # once: build llama-cpp-python, fetch its converter
    python bench/vs_llama_cpp.py [--texts 64] [--types F16 BF16 Q8_0] [--rounds 2]

(Not named llama_cpp.py: run from bench/, that name would shadow the llama_cpp package.)

--setup builds llama-cpp-python (pinned, from source: PyPI has no wheel for this platform; about
15-25 minutes on 2 cores, GGML_NATIVE so it uses the CPU's AVX512/AMX) into this interpreter and
unpacks llama.cpp's own converter (convert_hf_to_gguf.py, its conversion/ package and gguf-py)
from the same release's source archive into bench/.cache/llama.cpp-convert.

The run: the full-size random 0.6B Qwen3-Embedding checkpoint (bf16 safetensors, bench/common),
converted by llama.cpp's converter to each --types GGUF. Texts: standard-library docstrings of at
most 500 tokens (no engine truncates). Each (engine, file) runs in a fresh child process: load,
one warm-up pass, then batch tokens/s over all texts, single-query latency (median of 20, the
default instruction query) and peak RSS; the parent prints a table with ratios and the cosine of
each engine's vectors against q3embed's bf16 ones.

llama.cpp settings that make its Qwen3 embeddings comparable (and correct): `embedding=True`,
`pooling_type=LLAMA_POOLING_TYPE_LAST`, and n_ctx = n_batch = n_ubatch >= the longest text
(2,048 here: several sequences share a batch, and every token of a sequence must be in one
micro-batch for pooling). Whether its tokenizer appends `<|endoftext|>` is read off the
token ids and printed: without it the vectors are not Qwen3-Embedding's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import CACHE, checkpoint, peak_rss_gb, stdlib_docstrings  # noqa: E402

LLAMA_CPP_PYTHON = "0.3.36"
CONVERTER = CACHE / "llama.cpp-convert"
QUERY = "What is the capital of China?"
BATCH_TOKENS = 2048
MICRO_BATCH_TOKENS = 512  # every text is <= 500 tokens; a 2,048-token micro-batch crashed Q8_0 (SIGSEGV)


def setup() -> None:
    env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=ON")}
    # sentencepiece: the converter tries a SentencePiece vocabulary first and needs the package to
    # find out that Qwen's is a GPT-2-style BPE instead
    subprocess.run([sys.executable, "-m", "pip", "install", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                    "sentencepiece"], check=True, env=env)
    sdist_dir = CACHE / "llama-sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(sdist_dir)], check=True)
    archive = next(sdist_dir.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"))
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    shutil.rmtree(CONVERTER, ignore_errors=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inner = member.name.removeprefix(prefix)
            if member.name.startswith(prefix) and inner.startswith(wanted) and member.isfile():
                target = CONVERTER / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, target.open("wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(source, out)
    print(f"llama-cpp-python {LLAMA_CPP_PYTHON} installed; converter in {CONVERTER}")


def convert(model_dir: Path, file_type: str) -> Path:
    """The GGUF llama.cpp's own converter makes of `model_dir` (kept under bench/.cache)."""
    out = CACHE / f"{model_dir.name}-llamacpp-{file_type}.gguf"
    if not out.is_file():
        script = CONVERTER / "convert_hf_to_gguf.py"
        if not script.is_file():
            sys.exit(f"{script} is missing: run python bench/vs_llama_cpp.py --setup first")
        partial = out.with_suffix(".partial")
        done = subprocess.run([sys.executable, str(script), str(model_dir), "--outtype", file_type.lower(),
                               "--outfile", str(partial)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:  # its log (a line per tensor) only when it failed
            sys.exit(f"llama.cpp's converter failed on {file_type}:\n{done.stderr[-4000:]}")
        partial.rename(out)
    return out


def texts(count: int, model_dir: Path) -> list[str]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pool = stdlib_docstrings(count * 4)
    return [t for t in pool if len(tokenizer.encode(t).ids) <= 500][:count]


# ---------------------------------------------------------------------------- the children


def median_seconds(fn, times: int):
    """(the median seconds of `times` calls, the last call's result)."""
    seconds, result = [], None
    for _ in range(times):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def run_q3embed(model: str, items: list[str], rounds: int) -> dict:
    import numpy as np

    from q3embed import Embedder

    embedder = Embedder(model, device="cpu", max_length=512)
    embedder.warm_up()
    tokens = sum(len(ids) for ids in embedder.tokenize(items))
    embedder.encode(items[:4])
    batch, vectors = median_seconds(lambda: embedder.encode(items), rounds)
    single, _ = median_seconds(lambda: embedder.encode_queries([QUERY]), 20)
    return {"tokens": tokens, "batch_s": batch, "single_ms": 1000 * single,
            "dtype": embedder.info.dtype, "vectors": np.asarray(vectors).tolist(),
            "query_tokens": len(embedder.tokenize([QUERY], query=True)[0])}


def run_llama(gguf: str, items: list[str], rounds: int) -> dict:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=gguf, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
                          n_ctx=BATCH_TOKENS, n_batch=BATCH_TOKENS, n_ubatch=MICRO_BATCH_TOKENS,
                          n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False)
    ids = llm.tokenize(items[0].encode("utf-8"))
    eos = llm.token_eos()
    tokens = sum(len(llm.tokenize(t.encode("utf-8"))) for t in items)
    llm.embed(items[:4])
    batch, vectors = median_seconds(lambda: llm.embed(items, normalize=True), rounds)
    from q3embed.text.prompts import query_text

    prompt = query_text(QUERY, None)
    single, _ = median_seconds(lambda: llm.embed([prompt]), 20)
    return {"tokens": tokens, "batch_s": batch, "single_ms": 1000 * single,
            "appends_endoftext": bool(ids and ids[-1] == eos), "vectors": np.asarray(vectors).tolist(),
            "query_tokens": len(llm.tokenize(prompt.encode("utf-8")))}


def child(args: argparse.Namespace) -> None:
    items = json.loads(Path(args.texts_file).read_text())
    runner = run_llama if args.engine == "llama.cpp" else run_q3embed
    result = runner(args.model, items, args.rounds)
    result["peak_rss_gb"] = peak_rss_gb()
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------- the parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--types", nargs="+", default=["F16", "BF16", "Q8_0"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    if args.engine:
        child(args)
        return
    import numpy as np

    model_dir = checkpoint("embedding", "0.6B")
    items = texts(args.texts, model_dir)
    texts_file = CACHE / "llama_cpp_texts.json"
    texts_file.write_text(json.dumps(items))
    runs = [("q3embed", "safetensors bf16", str(model_dir))]
    runs += [("llama.cpp", f"GGUF {t}", str(convert(model_dir, t))) for t in args.types]
    runs += [("q3embed", f"GGUF {t}", str(convert(model_dir, t))) for t in args.types if t == "Q8_0"]
    print(f"{len(items)} docstrings (<= 500 tokens), 0.6B random checkpoint, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for engine, label, model in runs:
        result_file = CACHE / "llama_cpp_result.json"
        result_file.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, __file__, "--engine", engine, "--model", model, "--texts-file",
                               str(texts_file), "--result", str(result_file), "--rounds", str(args.rounds)])
        if done.returncode != 0:  # llama.cpp 0.3.36 segfaults on Q8_0 on the AMX Xeon: say so, go on
            print(f"  {engine:9s} {label:17s} failed: exit status {done.returncode}"
                  + (f" (signal {-done.returncode})" if done.returncode < 0 else ""), flush=True)
            continue
        result = json.loads(result_file.read_text())
        result.update(engine=engine, label=label, load=os.getloadavg()[0])
        results.append(result)
        print(f"  {engine:9s} {label:17s} {result['tokens'] / result['batch_s']:7.1f} tokens/s  "
              f"single query {result['single_ms']:7.1f} ms ({result['query_tokens']} tokens)  "
              f"peak RSS {result['peak_rss_gb']:.2f} GB"
              + (f"  appends <|endoftext|>: {result['appends_endoftext']}" if "appends_endoftext" in result else ""),
              flush=True)
    reference = np.asarray(results[0]["vectors"])
    base = results[0]["tokens"] / results[0]["batch_s"]
    print("\nengine    file              tokens/s  vs q3embed bf16  single ms  peak RSS  cosine vs q3embed bf16 (min)")
    for r in results:
        rate = r["tokens"] / r["batch_s"]
        cosine = float((np.asarray(r["vectors"]) * reference).sum(axis=1).min())
        print(f"{r['engine']:9s} {r['label']:17s} {rate:8.1f}  {rate / base:15.2f}  {r['single_ms']:9.1f}  "
              f"{r['peak_rss_gb']:6.2f} GB  {cosine:.5f}   (load {r['load']:.2f})")


if __name__ == "__main__":
    main()
