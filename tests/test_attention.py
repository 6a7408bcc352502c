"""The attention backends (model/attention.py) compute the same thing: SdpaLoop on every device,
Varlen's packing (cu_seqlens, the prefix before each sequence's keys, GQA, the causal keyword of
each torch version) checked on the CPU through a reference with varlen_attn's documented
semantics; the FlashAttention kernel itself is checked on a GPU (test_cuda.py, bench/gpu.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3embed import Embedder, Reranker
from q3embed.engine.device import place
from q3embed.engine.options import ModelOptions
from q3embed.errors import ConfigurationError
from q3embed.model.attention import SdpaLoop, Varlen, choose_attention
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES


def _reference(q, k, v, cu_q, cu_k, max_q, max_k, causal, gqa_allowed):
    """varlen_attn as documented: sequence i's queries q[cu_q[i]:cu_q[i+1]] attend to its keys
    k[cu_k[i]:cu_k[i+1]]; causal aligned at the bottom right (query j sees keys up to
    j + Lk - Lq); q head h reads kv head h // (heads / kv_heads). Computed in fp32."""
    assert cu_q.dtype == cu_k.dtype == torch.int32 and cu_q.shape == cu_k.shape
    assert q.shape[0] == int(cu_q[-1]) and k.shape[0] == v.shape[0] == int(cu_k[-1])
    if not gqa_allowed:
        assert k.shape[1] == q.shape[1], "this torch's varlen_attn needs as many kv heads as q heads"
    groups = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    for i in range(cu_q.shape[0] - 1):
        qs, qe, ks, ke = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        assert qe - qs <= max_q and ke - ks <= max_k
        qi = q[qs:qe].float().transpose(0, 1)  # [heads, Lq, d]
        ki = k[ks:ke].float().repeat_interleave(groups, 1).transpose(0, 1)
        vi = v[ks:ke].float().repeat_interleave(groups, 1).transpose(0, 1)
        scores = qi @ ki.transpose(1, 2) / q.shape[-1] ** 0.5  # [heads, Lq, Lk]
        if causal:
            lq, lk = qe - qs, ke - ks
            visible = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
            scores = scores.masked_fill(~visible, float("-inf"))
        out[qs:qe] = (scores.softmax(-1) @ vi).transpose(0, 1).to(q.dtype)
    return out


def varlen_new(q, k, v, cu_q, cu_k, max_q, max_k, *, window_size=(-1, -1), enable_gqa=False):
    """torch 2.10+: causal is window_size=(-1, 0); enable_gqa takes fewer kv heads."""
    assert window_size in ((-1, -1), (-1, 0))
    return _reference(q, k, v, cu_q, cu_k, max_q, max_k, window_size == (-1, 0), enable_gqa)


def varlen_old(q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=False):
    """torch 2.9: is_causal, and kv heads expanded by the caller."""
    return _reference(q, k, v, cu_q, cu_k, max_q, max_k, is_causal, False)


SEQ_LENS = [5, 1, 9, 3]


def _qkv(prefix_len: int):
    gen = torch.Generator().manual_seed(3)
    tokens = sum(SEQ_LENS)
    q = torch.randn(tokens, 4, 16, generator=gen)
    k, v = torch.randn(2, tokens, 2, 16, generator=gen)
    prefix = tuple(torch.randn(2, prefix_len, 2, 16, generator=gen)) if prefix_len else None
    return q, k, v, prefix


@pytest.mark.parametrize("function", [varlen_new, varlen_old])
@pytest.mark.parametrize("prefix_len", [0, 6])
def test_varlen_packing_equals_one_sdpa_call_per_sequence(function, prefix_len):
    q, k, v, prefix = _qkv(prefix_len)
    loop, varlen = SdpaLoop(), Varlen(function)
    device = torch.device("cpu")
    expected = loop.causal(q, k, v, loop.layout(SEQ_LENS, prefix_len, device), prefix)
    got = varlen.causal(q, k, v, varlen.layout(SEQ_LENS, prefix_len, device), prefix)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    last = torch.tensor(np.cumsum(SEQ_LENS) - 1)  # each sequence's last token asks alone
    expected_last = loop.last_token(q[last], k, v, loop.layout(SEQ_LENS, prefix_len, device), prefix)
    got_last = varlen.last_token(q[last], k, v, varlen.layout(SEQ_LENS, prefix_len, device), prefix)
    torch.testing.assert_close(got_last, expected_last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_last, got[last], atol=1e-5, rtol=1e-5)


def test_one_sequence_needs_no_device_tensor():
    """A batch of one (the CUDA-graph path) is one SDPA call: nothing is copied to the device."""
    layout = Varlen(varlen_new).layout([7], 0, torch.device("cpu"))
    assert layout.cu_q is None and layout.key_order is None


def test_a_model_on_varlen_embeds_and_reranks_as_on_sdpa(tiny_embedding_dir, tiny_reranker_dir):
    """The whole decoder, prefix reuse included (the reranker), through the varlen packing."""
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off")
    expected = embedder.encode(MIXED_TEXTS)
    embedder._backend.model.use_attention(Varlen(varlen_new))  # noqa: SLF001
    # Two attention computations summing fp32 in other orders, through every layer: one full-suite
    # run differed by 3.2e-5 (not reproduced alone); the kernel-level check above holds 1e-5.
    np.testing.assert_allclose(embedder.encode(MIXED_TEXTS), expected, atol=1e-4)

    reranker = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", compile="off")
    expected_scores = reranker.score(QUERIES[0], DOCUMENTS)
    reranker._scorer.model.use_attention(Varlen(varlen_old))  # noqa: SLF001
    np.testing.assert_allclose(reranker.score(QUERIES[0], DOCUMENTS), expected_scores, atol=1e-5)


def test_the_attention_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("q3embed.model.attention.cpu_kernels_run", lambda dtype, device: False)
    assert choose_attention("auto", cpu, torch.bfloat16).name == "sdpa"  # the CPU's fastest but for ours
    assert choose_attention("sdpa", cpu, torch.float32).name == "sdpa"
    with pytest.raises(ValueError, match="cpu-kernel.*AVX512-BF16"):
        choose_attention("cpu-kernel", cpu, torch.bfloat16)
    monkeypatch.setattr("q3embed.model.attention.cpu_kernels_run", lambda dtype, device: dtype == torch.bfloat16)
    assert choose_attention("auto", cpu, torch.bfloat16).name == "cpu-kernel"  # docs/benchmarks.md
    assert choose_attention("sdpa", cpu, torch.bfloat16).name == "sdpa"
    assert choose_attention("auto", cpu, torch.float32).name == "sdpa"
    with pytest.raises(ValueError, match="varlen.*CUDA"):
        choose_attention("varlen", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown attention"):
        choose_attention("flash", cpu, torch.bfloat16)


def test_the_options_name_the_choices_the_model_knows():
    from q3embed.engine.options import ATTENTION_MODES
    from q3embed.model.attention import ATTENTION_CHOICES

    assert ATTENTION_MODES == ATTENTION_CHOICES  # engine/options.py stays torch-free: a copy, kept equal


def test_the_attention_option_fails_before_any_loading():
    with pytest.raises(ConfigurationError, match="attention must be one of auto, sdpa, varlen, cpu-kernel"):
        ModelOptions(attention="flash")
    with pytest.raises(ConfigurationError, match="needs a CUDA device"):
        place(ModelOptions(device="cpu", attention="varlen"))
    with pytest.raises(ConfigurationError, match="needs bf16"):
        place(ModelOptions(device="cpu", dtype="float32", attention="cpu-kernel"))
    assert place(ModelOptions(device="cpu", dtype="float32", attention="auto")).attention == "sdpa"
