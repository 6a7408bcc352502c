"""The CUDA path on a real GPU: FlashAttention varlen, CUDA graphs, the GPU token budget.
Skipped, with the reason, where this torch sees no CUDA GPU (bench/gpu.py measures the same
things and more in one prepared run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3embed import Embedder, Reranker
from q3embed.engine.options import GPU_MAX_BATCH_TOKENS, GPU_MIN_BATCH_TOKENS
from q3embed.model.attention import varlen_attention_function
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to this torch")
needs_varlen = pytest.mark.skipif(varlen_attention_function() is None,
                                  reason=f"torch {torch.__version__} has no torch.nn.attention.varlen")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def cpu_reference(tiny_embedding_dir):
    return Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off").encode(MIXED_TEXTS)


def test_fp32_on_the_gpu_is_the_cpu_reference(tiny_embedding_dir, cpu_reference):
    gpu = Embedder(str(tiny_embedding_dir), dtype="float32", device="cuda")
    assert gpu._backend.model.attention.name == "sdpa"  # noqa: SLF001  (flash has no fp32)
    assert _cosines(gpu.encode(MIXED_TEXTS), cpu_reference).min() >= 0.99999


@needs_varlen
def test_varlen_in_bf16_is_the_cpu_reference(tiny_embedding_dir, cpu_reference):
    gpu = Embedder(str(tiny_embedding_dir), dtype="bfloat16", device="cuda")
    assert gpu._backend.model.attention.name == "varlen"  # noqa: SLF001
    assert _cosines(gpu.encode(MIXED_TEXTS), cpu_reference).min() >= 0.999
    loop = Embedder(str(tiny_embedding_dir), dtype="bfloat16", device="cuda", attention="sdpa")
    assert _cosines(gpu.encode(MIXED_TEXTS), loop.encode(MIXED_TEXTS)).min() >= 0.9999


@needs_varlen
def test_the_reranker_prefix_through_varlen(tiny_reranker_dir):
    cpu = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", compile="off")
    gpu = Reranker(str(tiny_reranker_dir), dtype="bfloat16", device="cuda")
    for query in QUERIES[:2]:
        assert np.abs(np.array(gpu.score(query, DOCUMENTS)) - np.array(cpu.score(query, DOCUMENTS))).max() <= 0.02


def test_one_short_text_replays_its_cuda_graph(tiny_embedding_dir):
    graphed = Embedder(str(tiny_embedding_dir), dtype="bfloat16", device="cuda")
    eager = Embedder(str(tiny_embedding_dir), dtype="bfloat16", device="cuda", compile="off")
    graphs = graphed._backend.graphs  # noqa: SLF001
    graphed.warm_up()  # captures every bucket
    assert set(graphs.captured) == set(graphs.buckets) and not graphs.failed
    runs = graphs.runs
    for text in ("Beijing", "What is the capital of China?", "word " * 300):
        assert _cosines(graphed.encode([text]), eager.encode([text])).min() >= 0.9999
    assert graphs.runs == runs + 3
    assert eager._backend.graphs is None  # noqa: SLF001


def test_the_token_budget_is_sized_from_free_memory(tiny_embedding_dir):
    budget = Embedder(str(tiny_embedding_dir), device="cuda").max_batch_tokens
    assert GPU_MIN_BATCH_TOKENS <= budget <= GPU_MAX_BATCH_TOKENS
    assert Embedder(str(tiny_embedding_dir), device="cuda", max_batch_tokens=999).max_batch_tokens == 999
