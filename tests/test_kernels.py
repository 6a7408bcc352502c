"""The decoder's elementwise kernels: eager = the reference's numerics, compiled = eager, a failed
compile falls back, and the compile switch reads as documented.

The compiled-versus-eager tests skip where torch.compile cannot run (no C++ compiler), and check
that the compiled code really ran: a silent fallback would compare eager with eager."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from texts import MIXED_TEXTS

from q3embed import Embedder
from q3embed.engine import device
from q3embed.engine.device import AUTO_COMPILE_AFTER_TOKENS, resolve_compile
from q3embed.errors import ConfigurationError
from q3embed.model import kernels
from q3embed.model.qwen3 import rope_cos_sin

CPU = torch.device("cpu")
needs_compiler = pytest.mark.skipif(not kernels.can_compile(CPU),
                                    reason="no C++ compiler here: torch.compile's CPU backend (Inductor) cannot run")


def _assert_compiled_ran() -> None:
    """The shared compiled kernels answered without falling back to eager."""
    compiled = kernels.compiled_kernels()
    assert not compiled.rms_norm.failed and not compiled.norm_rope.failed, "torch.compile fell back to eager"


def _inputs(dtype: torch.dtype, tokens: int = 37, heads: int = 4, head_dim: int = 64):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, heads, head_dim, generator=generator).mul(3).to(dtype)  # [T, heads, head_dim]
    weight = torch.rand(head_dim, generator=generator).add(0.5).to(dtype)
    cos, sin = rope_cos_sin(torch.arange(tokens) % 11, head_dim, 1_000_000.0)  # [T, head_dim] fp32
    return x, weight, cos, sin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_rms_norm_is_the_reference_bit_for_bit(dtype):
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    x, weight, _, _ = _inputs(dtype)
    reference = Qwen3RMSNorm(weight.shape[0], eps=1e-6).to(dtype)
    reference.weight.data.copy_(weight)
    assert torch.equal(kernels.rms_norm(x, weight, 1e-6), reference(x))


def test_eager_rope_is_the_reference_bit_for_bit_in_fp32():
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

    x, _, cos, sin = _inputs(torch.float32)
    heads_first = x.transpose(0, 1)[None]  # the reference's [B, heads, T, head_dim]
    reference, _ = apply_rotary_pos_emb(heads_first, heads_first, cos[None], sin[None])
    assert torch.equal(kernels.apply_rope(x, cos, sin), reference[0].transpose(0, 1))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernels_equal_the_eager_ones(dtype):
    """Only an fp32 reduction's order may differ: fp32 within 1e-6, bf16 a rare last-bit flip."""
    compiled = kernels.compiled_kernels()
    x, weight, cos, sin = _inputs(dtype)
    flat = x.reshape(x.shape[0], -1)
    pairs = [(compiled.norm_rope(x, weight, cos, sin, 1e-6), kernels.norm_rope(x, weight, cos, sin, 1e-6)),
             (compiled.rms_norm(flat, weight.repeat(x.shape[1]), 1e-6),
              kernels.rms_norm(flat, weight.repeat(x.shape[1]), 1e-6))]
    for got, want in pairs:
        assert got.dtype == want.dtype and got.shape == want.shape
        if dtype == torch.float32:
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        else:
            assert (got != want).float().mean().item() <= 0.01
            torch.testing.assert_close(got, want, rtol=2 ** -7, atol=0)  # one bf16 step at most
    _assert_compiled_ran()


def test_a_failed_compile_falls_back_to_eager_for_good(monkeypatch, caplog):
    wrapped = kernels._CompiledOrEager(kernels.rms_norm)
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    monkeypatch.setattr(wrapped, "compiled", broken)
    x = torch.randn(3, 8)
    with caplog.at_level(logging.WARNING, logger="q3embed.model.kernels"):
        first, second = wrapped(x, torch.ones(8), 1e-6), wrapped(x, torch.ones(8), 1e-6)
    assert torch.equal(first, kernels.rms_norm(x, torch.ones(8), 1e-6)) and torch.equal(first, second)
    assert len(calls) == 1 and "InvalidCxxCompiler" in caplog.text


@pytest.mark.parametrize("compiler", [True, False])
def test_the_compile_switch(monkeypatch, compiler):
    """on and off are what they say; auto compiles after AUTO_COMPILE_AFTER_TOKENS on a CPU that can."""
    monkeypatch.setattr(kernels, "can_compile", lambda _: compiler)
    assert resolve_compile("off", CPU) is None and resolve_compile("on", CPU) == 0 and resolve_compile("ON", CPU) == 0
    assert resolve_compile("max", CPU) == 0
    assert resolve_compile("auto", CPU) == (AUTO_COMPILE_AFTER_TOKENS if compiler else None)
    assert resolve_compile("auto", torch.device("cuda")) is None  # not measured to pay on a GPU yet
    with pytest.raises(ConfigurationError, match="'sometimes'.*auto, on, off or max"):
        resolve_compile("sometimes", CPU)
    with pytest.raises(ConfigurationError, match="auto, on, off or max"):
        Embedder("auto", compile="fast")


def test_the_environment_plays_no_part(monkeypatch, tiny_embedding_dir):
    """Q3EMBED_COMPILE is the CLI's twin of --compile, read by the CLI only: the engine takes its options."""
    monkeypatch.setenv("Q3EMBED_COMPILE", "on")
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off")
    embedder.encode(MIXED_TEXTS * 20)
    assert embedder._backend.model.norm.kernels is kernels.EAGER


def test_auto_compiles_once_a_model_has_run_enough_tokens(tiny_embedding_dir, monkeypatch):
    monkeypatch.setattr(device, "AUTO_COMPILE_AFTER_TOKENS", 300)
    monkeypatch.setattr(kernels, "can_compile", lambda _: True)
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="auto")
    schedule = embedder._backend.kernels
    embedder.encode(["a short text"])  # a one-shot command stays eager
    assert not schedule.compiled and embedder._backend.model.norm.kernels is kernels.EAGER
    embedder.encode(MIXED_TEXTS)  # a long job switches
    assert schedule.compiled and embedder._backend.model.norm.kernels is kernels.compiled_kernels()
    never = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off")
    never.warm_up()  # a server's start-up: off stays off
    assert not never._backend.kernels.compiled
    now = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="auto")
    now.warm_up()  # ... and auto compiles there, before the first request
    assert now._backend.kernels.compiled


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_compiled_model_embeds_as_the_eager_one(tiny_embedding_dir, dtype):
    vectors = {mode: Embedder(str(tiny_embedding_dir), dtype=dtype, device="cpu", compile=mode).encode(MIXED_TEXTS)
               for mode in ("on", "off")}
    assert np.min((vectors["on"] * vectors["off"]).sum(axis=1)) >= (0.999999 if dtype == "float32" else 0.9999)
    _assert_compiled_ran()


@needs_compiler
def test_a_compiled_reranker_scores_as_the_eager_one(tiny_reranker_dir):
    from texts import DOCUMENTS, QUERIES

    from q3embed import Reranker

    scores = {mode: Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", compile=mode).score(
        QUERIES[0], DOCUMENTS) for mode in ("on", "off")}  # the shared prefix goes through prefill too
    assert np.abs(np.array(scores["on"]) - np.array(scores["off"])).max() <= 1e-5
    _assert_compiled_ran()


@needs_compiler
def test_short_sequence_graphs_embed_as_the_eager_model(tiny_embedding_dir, caplog):
    """compile="max": one short sequence runs in its bucket's frozen graph, padded at its end
    (causal attention: the padding changes nothing); longer ones and batches run eagerly."""
    eager = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off")
    fast = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="max")
    graphs = fast._backend.graphs  # noqa: SLF001
    fast.warm_up()  # compiles every bucket, then embeds one word through its graph
    warmed = graphs.runs
    assert warmed >= len(graphs.buckets) and not graphs.failed
    for text, query in (("What is the capital of China?", True), ("Beijing", False)):
        np.testing.assert_allclose(fast.encode([text], query=query), eager.encode([text], query=query), atol=1e-6)
    assert graphs.runs == warmed + 2
    for texts in (["word " * 80], ["a b c", "d e"]):  # past the largest bucket; a batch of two
        np.testing.assert_allclose(fast.encode(texts), eager.encode(texts), atol=1e-6)
    assert graphs.runs == warmed + 2
    assert "AUTOTUNE" not in caplog.text


@needs_compiler
@pytest.mark.parametrize("kind", ["embedder", "embedder with graphs", "reranker"])
def test_after_warm_up_no_request_length_waits_for_a_compile(tiny_embedding_dir, tiny_reranker_dir, kind):
    """The kernels compile for the first length they see, then once more with the token count
    dynamic (kernels._CompiledOrEager): a warm-up must run the eager decoder at two lengths, also
    where short texts go through whole-model graphs (compile="max"), or the first request of
    another length compiles while its client waits."""
    from q3embed import Reranker

    torch._dynamo.reset()  # this process's earlier tests compiled them already
    kernels.compiled_kernels.cache_clear()
    compiles = torch._dynamo.utils.counters["stats"]
    if kind == "reranker":
        model = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", compile="auto")
        use = lambda: (model.score("another query", ["a document of another length, " * 4, "one more"]),  # noqa: E731
                       model.score("q", ["a single document, not through the prefix"]))
    else:
        model = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu",
                         compile="max" if kind == "embedder with graphs" else "auto")
        use = lambda: (model.encode(["past the largest graph bucket, " * 12]),  # noqa: E731
                       model.encode(["past the largest graph bucket and longer, " * 14]),
                       model.encode(["a text of a length the warm-up did not see"]), model.encode(MIXED_TEXTS))
    model.warm_up()
    warmed = compiles["unique_graphs"]
    assert warmed > 0
    use()
    assert compiles["unique_graphs"] == warmed
    _assert_compiled_ran()
