"""Shared benchmark pieces: the full-size random checkpoint, real texts, memory and timing."""

from __future__ import annotations

import gc
import inspect
import os
import pkgutil
import statistics
import time
from pathlib import Path

import torch

from q3embed.testing.checkpoints import CheckpointSpec, build_checkpoint

CACHE = Path(os.environ.get("Q3EMBED_BENCH_CACHE", Path(__file__).parent / ".cache"))


def checkpoint(kind: str = "embedding", shape: str = "0.6B") -> Path:
    """A full-size random Qwen3 checkpoint in bf16 (as released), built once and kept."""
    out = CACHE / f"qwen3-{kind}-{shape}-random"
    if not (out / "config.json").is_file():
        print(f"building {out} (random weights, real tokenizer) ...", flush=True)
        spec = CheckpointSpec(kind=kind, shape=shape, dtype=torch.bfloat16,
                              prefixed_keys=kind == "reranker", eos_post_processor=kind == "embedding",
                              tied_lm_head=kind == "reranker")
        build_checkpoint(out, spec)
    return out


def stdlib_docstrings(count: int = 256) -> list[str]:
    """Real English text of mixed length: docstrings of Python standard-library modules."""
    import importlib

    texts: list[str] = []
    # Only the standard library's own directories: iter_modules() over all of sys.path would import
    # every installed package, and every script beside the one running (which then runs again).
    stdlib = os.path.dirname(os.__file__)
    for info in sorted(pkgutil.iter_modules([stdlib, os.path.join(stdlib, "lib-dynload")]), key=lambda m: m.name):
        # antigravity opens a browser, this prints the Zen: nothing to read there
        if len(texts) >= count or info.name.startswith("_") or "test" in info.name or info.name in ("antigravity",
                                                                                                     "this"):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # some stdlib modules need extras (tkinter, curses); skip them
            continue
        if not str(getattr(module, "__file__", "") or "").startswith(os.path.dirname(os.__file__)):
            continue
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 40 and doc not in texts:
                texts.append(doc)
            if len(texts) >= count:
                break
    return texts[:count]


def reset_peak_rss() -> None:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def median_seconds(run, rounds: int) -> float:
    """Median wall seconds of `rounds` calls of `run()`, after one call to warm it up."""
    run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def matmul_tflops(dtype: torch.dtype, m: int = 2048, k: int = 1024, n: int = 3072, repeats: int = 10) -> float:
    """Measured throughput of one matrix product of the model's own shapes: the best single product
    of `repeats`, by the fastest kernel there is here for it (torch's own, and in bf16 the weights
    packed for oneDNN and, where they run, in tiles for q3embed's own kernel), so that a limit
    derived from it is the strictest one."""
    from q3embed.model.linear import Linear

    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(n, k, dtype=dtype)
    products = [lambda: a @ b.T]
    packed = Linear(k, n, bias=False).to(dtype)
    if packed.pack_for_onednn():
        products.append(lambda: packed(a))
    tiled = Linear(k, n, bias=False).to(dtype)
    if tiled.pack_for_kernel():
        products.append(lambda: tiled(a))
    best = float("inf")
    with torch.inference_mode():
        for product in products:
            product()
            for _ in range(repeats):
                best = min(best, timed(product)[1])
    return 2 * m * k * n / best / 1e12
