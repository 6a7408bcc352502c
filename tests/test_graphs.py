"""Short-sequence graphs (model/graphs.py): bucket choice, padding at the end that no real token
sees, the fall-back on failure, and which graphs a placement gets. The CUDA capture itself runs
in test_cuda.py where a GPU is present; what it shares with every kind of graph is tested here
through graphs that run the eager decoder on the padded buffer."""

from __future__ import annotations

import logging

import pytest
import torch

from q3embed import Embedder
from q3embed.engine.device import gpu_batch_tokens, resolve_graphs
from q3embed.engine.options import GPU_MAX_BATCH_TOKENS, GPU_MIN_BATCH_TOKENS
from q3embed.model.graphs import CUDA_BUCKETS, BucketedGraphs, CudaGraphs, padded_ids
from q3embed.testing.checkpoints import SHAPES


class EagerGraphs(BucketedGraphs):
    """What a captured graph computes: the decoder over one padded sequence of the bucket's size."""

    def _run(self, padded: torch.Tensor, device: torch.device) -> torch.Tensor:
        return self.model(padded.to(device), torch.arange(padded.shape[0], device=device), [padded.shape[0]])


class FailingGraphs(BucketedGraphs):
    def _run(self, padded: torch.Tensor, device: torch.device) -> torch.Tensor:
        raise RuntimeError("operation not permitted when stream is capturing")


def test_bucket_choice():
    graphs = EagerGraphs(torch.nn.Identity(), CUDA_BUCKETS)
    assert [graphs.bucket(n) for n in (1, 16, 17, 32, 100, 512)] == [16, 16, 32, 32, 128, 512]
    assert graphs.bucket(513) is None and graphs.bucket(0) is None


def test_padding_repeats_the_last_token():
    assert padded_ids([5, 6, 7], 6).tolist() == [5, 6, 7, 7, 7, 7]
    assert padded_ids([5], 1).tolist() == [5]


def test_the_padding_changes_no_pooled_vector(tiny_embedding_dir):
    """A sequence padded to its bucket pools, at its real last token, what it pools alone."""
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off")
    backend = embedder._backend  # noqa: SLF001
    texts = ["Beijing", "What is the capital of China?", "word " * 40]
    expected = embedder.encode(texts)  # one batch, no graph
    backend.graphs = EagerGraphs(backend.model, (8, 16, 64))
    for text, vector in zip(texts, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(embedder.encode(text)), torch.from_numpy(vector),
                                   atol=1e-6, rtol=1e-5)
    assert backend.graphs.runs == 3  # every one went through a padded bucket (lengths 3, ~10, 41)


def test_a_failed_graph_falls_back_to_the_eager_decoder_for_good(tiny_embedding_dir, caplog):
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off")
    expected = embedder.encode("Beijing")
    backend = embedder._backend  # noqa: SLF001
    backend.graphs = FailingGraphs(backend.model, (16,))
    with caplog.at_level(logging.WARNING, logger="q3embed"):
        torch.testing.assert_close(torch.from_numpy(embedder.encode("Beijing")), torch.from_numpy(expected))
        embedder.encode("Beijing")
    assert backend.graphs.failed and backend.graphs.bucket(3) is None
    assert caplog.text.count("stream is capturing") == 1  # said once, then eager for good


def test_which_graphs_a_placement_gets(monkeypatch):
    cuda = torch.device("cuda")  # resolve_graphs only reads the device's type
    assert resolve_graphs("auto", cuda) == "cuda" and resolve_graphs("on", cuda) == "cuda"
    assert resolve_graphs("off", cuda) is None
    monkeypatch.setattr("q3embed.model.kernels.can_compile", lambda device: True)
    assert resolve_graphs("max", torch.device("cpu")) == "inductor"
    assert resolve_graphs("auto", torch.device("cpu")) is None
    monkeypatch.setattr("q3embed.model.kernels.can_compile", lambda device: False)
    assert resolve_graphs("max", torch.device("cpu")) is None


def test_cuda_graphs_need_a_gpu_only_when_they_run(tiny_embedding_dir):
    """Building the CUDA graphs object captures nothing; a CPU model never gets one."""
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu")
    assert embedder._backend.graphs is None  # noqa: SLF001
    assert CudaGraphs(torch.nn.Identity()).captured == {}


@pytest.mark.parametrize(("size", "free_gib", "expected"), [
    ("0.6B", 120, GPU_MAX_BATCH_TOKENS),  # an H200 after loading: capped (a batch only gets longer)
    ("8B", 6, 6144),  # a 24 GB card after 16 GB of weights: a third of the rest, 294 KB a token
    ("8B", 0.5, GPU_MIN_BATCH_TOKENS),  # nearly full: the floor (the allocator then says what is short)
])
def test_the_gpu_token_budget_follows_free_memory(size, free_gib, expected):
    per_token = SHAPES[size].activation_bytes_per_token(2)  # bf16
    assert gpu_batch_tokens(int(free_gib * 2**30), per_token) == expected
    assert expected % 1024 == 0
