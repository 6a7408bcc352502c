"""q3embed's CPU kernels for the decoder's other operations (csrc/decoder_ops.cpp): RMSNorm and the
q/k norm + RoPE compute the eager kernels' values (but for the order of one fp32 sum), attention is
as close to the fp32 computation as SDPA in bf16, and the engine runs them where they run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3embed import Embedder, Reranker
from q3embed.model import attention
from q3embed.model.attention import CpuKernel, Layout, SdpaLoop, choose_attention
from q3embed.model.block_linear import Q8Linear, cpu_kernels_available, cpu_kernels_preferred, quantize_q8_0
from q3embed.model.kernels import CPU_NATIVE, EAGER, add_then_rms_norm, norm_rope, rms_norm, swiglu
from q3embed.model.linear import Linear
from q3embed.model.qwen3 import rope_cos_sin
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES

pytestmark = pytest.mark.skipif(not cpu_kernels_available(),
                                reason="q3embed's CPU kernels need AVX512-BF16 and a C++ compiler")
ops = torch.ops.q3embed_cpu


def _assert_nearly_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal but for rare last-bit flips of a bf16 value (one fp32 sum in another order)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype == torch.bfloat16
    differ = got != expected
    assert differ.float().mean() <= 1e-4
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 ** -6, atol=2 ** -6)  # values ~1: 2 bf16 steps


@pytest.mark.parametrize("tokens, dim", [(1, 64), (13, 1024), (700, 1024), (5, 2560)])
def test_rms_norm_is_the_eager_norm(tokens, dim):
    generator = torch.Generator().manual_seed(tokens)
    x = (torch.randn(tokens, dim + 32, generator=generator) * 3).bfloat16()[:, 32:]  # rows at a stride
    weight = (torch.randn(dim, generator=generator) * 0.1 + 1).bfloat16()
    _assert_nearly_equal(CPU_NATIVE.rms_norm(x, weight, 1e-6), rms_norm(x, weight, 1e-6))


@pytest.mark.parametrize("tokens, dim", [(1, 64), (13, 1024), (700, 1024), (5, 2560)])
def test_the_residual_add_and_norm_in_one_pass_are_the_two_calls(tokens, dim):
    generator = torch.Generator().manual_seed(tokens)
    x = (torch.randn(tokens + 1, dim + 32, generator=generator) * 30).bfloat16()[:, 32:]  # rows at a stride
    added = (torch.randn(tokens + 1, dim, generator=generator) * 3).bfloat16()
    added[-1, :4] = torch.tensor([float("inf"), -x[-1, 1].float(), 1e-30, 3.0e38])  # inf, an exact 0, tiny, overflow
    weight = (torch.randn(dim, generator=generator) * 0.1 + 1).bfloat16()
    total, normed = CPU_NATIVE.add_rms_norm(x, added, weight, 1e-6)
    expected_total, expected_normed = add_then_rms_norm(rms_norm, x, added, weight, 1e-6)
    assert torch.equal(total, expected_total)  # the bf16 sum, bit for bit (inf included)
    _assert_nearly_equal(normed[:-1], expected_normed[:-1])
    torch.testing.assert_close(normed[-1], expected_normed[-1], rtol=0, atol=0, equal_nan=True)  # inf: nan and zeros
    fp32 = x.float(), added.float(), weight.float(), 1e-6  # not the kernels' dtype: the two eager calls
    torch.testing.assert_close(CPU_NATIVE.add_rms_norm(*fp32), EAGER.add_rms_norm(*fp32), equal_nan=True)


@pytest.mark.parametrize("tokens, heads, head_dim", [(1, 6, 32), (13, 24, 128), (300, 24, 128)])
@pytest.mark.parametrize("per_head_weight", [False, True])
def test_norm_rope_is_the_eager_norm_rope(tokens, heads, head_dim, per_head_weight):
    generator = torch.Generator().manual_seed(heads)
    fused = torch.randn(tokens, (heads + 4) * head_dim, generator=generator).bfloat16()
    x = fused[:, :heads * head_dim].view(tokens, heads, head_dim)  # a view into a fused projection
    shape = (heads, head_dim) if per_head_weight else (head_dim,)
    weight = (torch.randn(shape, generator=generator) * 0.1 + 1).bfloat16()
    cos, sin = rope_cos_sin(torch.arange(tokens) + 7, head_dim, 1_000_000.0)
    _assert_nearly_equal(CPU_NATIVE.norm_rope(x, weight, cos, sin, 1e-6), norm_rope(x, weight, cos, sin, 1e-6))


@pytest.mark.parametrize("tokens, width", [(1, 128), (13, 3072), (400, 3072)])
def test_swiglu_is_the_eager_swiglu(tokens, width):
    generator = torch.Generator().manual_seed(tokens)
    gate_up = (torch.randn(tokens, 2 * width, generator=generator) * 4).bfloat16()
    gate_up[0, :16] = torch.tensor([-200, -100, -88.8, -1e30, 1e30, float("inf"), float("-inf"), float("nan"),
                                    -1, 0, 1, 50, 88.8, 100, 200, -3])  # the ends of e^x's range
    gate, up = gate_up.split(width, dim=-1)  # the fused projection's two halves, rows at a stride
    got, expected = CPU_NATIVE.swiglu(gate, up), swiglu(gate, up)
    assert torch.equal(got.isnan(), expected.isnan())
    _assert_nearly_equal(got.nan_to_num(), expected.nan_to_num())


def _gate_up(kind: str, width: int, hidden: int = 1024) -> torch.nn.Module:
    """A fused [gate; up] projection hidden -> 2 x width in the kernels' bf16 tiles or Q8_0 blocks
    (for bf16 inputs or int8 ones)."""
    generator = torch.Generator().manual_seed(width)
    weight = (torch.randn(2 * width, hidden, generator=generator) * 0.05).bfloat16()
    if kind.startswith("q8_0"):
        return Q8Linear.from_blocks(*quantize_q8_0(weight), int8_inputs=kind == "q8_0_int8")
    layer = Linear(hidden, 2 * width, bias=False).to(torch.bfloat16)
    layer.weight.data.copy_(weight)
    assert layer.pack_for_kernel()
    return layer


@pytest.mark.parametrize("kind", ["bf16", "q8_0", "q8_0_int8"])
@pytest.mark.parametrize("tokens, width", [(1, 64), (13, 3072), (29, 96), (300, 3072)])
def test_swiglu_inside_the_product_is_the_product_then_swiglu(kind, tokens, width, monkeypatch):
    monkeypatch.setattr("q3embed.model.linear.cpu_kernels_run", lambda dtype, device: True)
    gate_up = _gate_up(kind, width)
    x = (torch.randn(tokens, 1024, generator=torch.Generator().manual_seed(tokens))).bfloat16()
    gate, up = gate_up(x).chunk(2, dim=-1)
    two_calls = CPU_NATIVE.swiglu(gate, up)  # the kernel's products, then q3embed_cpu::silu_mul
    fused = CPU_NATIVE.gate_up_swiglu(gate_up, x.view(1, tokens, 1024))
    assert fused.shape == (1, tokens, width)
    assert torch.equal(fused[0], two_calls)  # bit for bit: the same roundings in the same order
    assert torch.equal(EAGER.gate_up_swiglu(gate_up, x), swiglu(gate, up))


def test_swiglu_stays_outside_products_the_kernels_do_not_run():
    plain = Linear(64, 128, bias=False).to(torch.bfloat16)  # oneDNN's or torch's, not tiles
    x = torch.randn(5, 64).bfloat16()
    gate, up = plain(x).chunk(2, dim=-1)
    assert torch.equal(CPU_NATIVE.gate_up_swiglu(plain, x), CPU_NATIVE.swiglu(gate, up))


def test_the_native_kernels_leave_what_they_do_not_take_to_the_eager_ones():
    x = torch.randn(3, 64)  # fp32
    weight = torch.ones(64)
    torch.testing.assert_close(CPU_NATIVE.rms_norm(x, weight, 1e-6), EAGER.rms_norm(x, weight, 1e-6))
    odd = torch.randn(3, 48).bfloat16()  # not whole 32-value vectors
    assert torch.equal(CPU_NATIVE.rms_norm(odd, torch.ones(48).bfloat16(), 1e-6),
                       EAGER.rms_norm(odd, torch.ones(48).bfloat16(), 1e-6))


def _qkv(seq_lens: list[int], heads: int, kv_heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """q, k, v as views into one fused projection [T, (heads + 2 kv_heads) d], as the model has them."""
    tokens = sum(seq_lens)
    generator = torch.Generator().manual_seed(tokens)
    fused = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=generator).bfloat16()
    q = fused[:, :heads * head_dim].view(tokens, heads, head_dim)
    k = fused[:, heads * head_dim:(heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    v = fused[:, (heads + kv_heads) * head_dim:].view(tokens, kv_heads, head_dim)
    return q, k, v


# 4 queries a pass, then the 1-3 left together; keys 16 to 64 at a time
@pytest.mark.parametrize("seq_lens", [[1], [3], [13], [16, 17], [2, 6, 70], [5, 300, 1, 40], [600]])
@pytest.mark.parametrize("heads, kv_heads, head_dim", [(16, 8, 128), (4, 2, 32), (4, 4, 64)])
def test_attention_is_as_close_to_fp32_as_sdpa(seq_lens, heads, kv_heads, head_dim):
    q, k, v = _qkv(seq_lens, heads, kv_heads, head_dim)
    layout = Layout(seq_lens)
    exact = SdpaLoop().causal(q.float(), k.float(), v.float(), layout, None)  # [T, heads, d]
    sdpa_error = (SdpaLoop().causal(q, k, v, layout, None).float() - exact).abs().max()
    got = ops.causal_attention(q, k, v, seq_lens, False)
    assert got.shape == q.shape and got.dtype == torch.bfloat16
    assert (got.float() - exact).abs().max() <= sdpa_error * 1.25 + 1e-3
    last = torch.tensor(seq_lens).cumsum(0) - 1  # each sequence's last token sees all its keys
    got_last = ops.causal_attention(q[last].contiguous(), k, v, seq_lens, True)
    assert (got_last.float() - exact[last]).abs().max() <= sdpa_error * 1.25 + 1e-3


@pytest.mark.parametrize("seq_lens", [[1], [6, 9], [40, 3, 17]])
def test_attention_continues_a_shared_prefix_as_sdpa_does(seq_lens):
    q, k, v = _qkv(seq_lens, 16, 8, 128)
    prefix = _qkv([21], 16, 8, 128)[1:]  # a 21-token prefix's keys and values, views as the model keeps them
    layout = Layout(seq_lens, 21)
    exact = SdpaLoop().causal(q.float(), k.float(), v.float(), layout, tuple(x.float() for x in prefix))
    sdpa_error = (SdpaLoop().causal(q, k, v, layout, prefix).float() - exact).abs().max()
    got = CpuKernel().causal(q, k, v, layout, prefix)
    assert (got.float() - exact).abs().max() <= sdpa_error * 1.25 + 1e-3
    last = torch.tensor(seq_lens).cumsum(0) - 1
    got_last = CpuKernel().last_token(q[last], k, v, layout, prefix)
    assert (got_last.float() - exact[last]).abs().max() <= sdpa_error * 1.25 + 1e-3


def test_attention_says_what_is_wrong_with_its_inputs():
    q, k, v = _qkv([4, 4], 4, 2, 32)
    with pytest.raises(RuntimeError, match="sum to the number of keys"):
        ops.causal_attention(q, k, v, [4, 3], False)
    with pytest.raises(RuntimeError, match="one row per sequence"):
        ops.causal_attention(q, k, v, [4, 4], True)
    with pytest.raises(RuntimeError, match="bf16"):
        ops.causal_attention(q.float(), k, v, [4, 4], False)


def test_the_cpu_kernel_backend_hands_what_it_does_not_take_to_sdpa(monkeypatch):
    q, k, v = _qkv([6, 9], 4, 2, 32)
    layout = Layout([6, 9])
    calls = []
    monkeypatch.setattr(attention, "_SINGLE", type("Spy", (SdpaLoop,), {
        "causal": lambda self, *args: calls.append("causal") or SdpaLoop.causal(self, *args)})())
    CpuKernel().causal(q, k, v, layout, None)
    assert calls == []
    monkeypatch.setattr(attention, "CPU_KERNEL_MAX_LEN", 8)  # longer than the kernel takes
    expected = SdpaLoop().causal(q, k, v, layout, None)
    assert torch.equal(CpuKernel().causal(q, k, v, layout, None), expected) and calls == ["causal"]
    prefix = (torch.randn(3, 2, 32).bfloat16(), torch.randn(3, 2, 32).bfloat16())  # the reranker's shared prefix
    monkeypatch.setattr(attention, "CPU_KERNEL_MAX_LEN", 11)  # 9 own tokens and 3 of the prefix: past it
    CpuKernel().causal(q, k, v, Layout([6, 9], 3), prefix)
    assert calls == ["causal", "causal"]
    monkeypatch.setattr(attention, "CPU_KERNEL_MAX_LEN", 12)
    CpuKernel().causal(q, k, v, Layout([6, 9], 3), prefix)
    assert calls == ["causal", "causal"]


def test_the_engine_attends_and_norms_on_the_kernels_where_they_run(tiny_embedding_dir, tiny_reranker_dir):
    if not cpu_kernels_preferred():
        pytest.skip("the engine uses q3embed's CPU kernels only where they are preferred (no AMX)")
    cpu = torch.device("cpu")
    assert choose_attention("auto", cpu, torch.bfloat16).name == "cpu-kernel"
    assert choose_attention("auto", cpu, torch.float32).name == "sdpa"
    native = Embedder(str(tiny_embedding_dir), dtype="bfloat16", device="cpu")
    model = native._backend.model  # noqa: SLF001
    assert native.info.attention == "cpu-kernel" and model.layers[0].input_layernorm.kernels is CPU_NATIVE
    texts = MIXED_TEXTS + DOCUMENTS
    ours = native.encode(texts)
    model.use_attention(SdpaLoop())
    model.use_kernels(EAGER)
    reference = native.encode(texts)
    assert (ours * reference).sum(axis=1).min() >= 0.9999
    assert np.abs(ours - reference).max() <= 5e-3
    for reuse_prefix in (False, True):  # each pair in full; the shared prefix computed once
        reranker = Reranker(str(tiny_reranker_dir), dtype="bfloat16", device="cpu", reuse_prefix=reuse_prefix)
        scorer = reranker._scorer.model  # noqa: SLF001
        ours = np.array(reranker.score(QUERIES[0], DOCUMENTS))
        scorer.use_attention(SdpaLoop())
        scorer.use_kernels(EAGER)
        assert np.abs(ours - np.array(reranker.score(QUERIES[0], DOCUMENTS))).max() <= 2e-2


def test_the_ops_trace_for_compiled_graphs():
    q, k, v = _qkv([5, 7], 4, 2, 32)
    weight = torch.ones(32).bfloat16()
    cos, sin = rope_cos_sin(torch.arange(12), 32, 1_000_000.0)

    def layer_part(q, k, v):
        normed = ops.norm_rope(q, weight, cos, sin, 1e-6)
        attended = ops.causal_attention(normed, k, v, [5, 7], False).view(12, -1)  # [T, heads * d]
        total, normed = ops.add_rms_norm(attended, attended, torch.ones(128).bfloat16(), 1e-6)
        return ops.rms_norm(normed, torch.ones(128).bfloat16(), 1e-6) + total

    compiled = torch.compile(layer_part, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(q, k, v), layer_part(q, k, v))
