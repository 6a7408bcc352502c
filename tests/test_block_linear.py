"""The Q8_0 kernel (model/block_linear.py, csrc/block_linear.cpp) and GGUF files that keep their
Q8_0 blocks: the kernel's products are the dequantized model's, and the model holds about the
file's size."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from q3embed import Embedder
from q3embed.model.block_linear import (Q8Linear, cpu_kernels_available, cpu_kernels_preferred,
                                        pack_int8_input_tiles, pack_tiles, quantize_q8_0, tiles_fit)
from q3embed.model.linear import Linear
from q3embed.model.quantized import Int8Embedding
from q3embed.model.qwen3 import _concatenated
from q3embed.testing.gguf_writer import write_gguf
from q3embed.weights.gguf import load_gguf_qwen3
from texts import DOCUMENTS, MIXED_TEXTS

TEXTS = MIXED_TEXTS + DOCUMENTS

pytestmark = pytest.mark.skipif(not cpu_kernels_available(),
                                reason="the Q8_0 kernel needs AVX512-BF16 and a C++ compiler")


def _blocks(out_features: int, in_features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random Q8_0 blocks: q int8 [out, in] in -127..127, d fp16 [out, in/32] of a 0.6B's size."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8, generator=generator)
    d = (torch.rand(out_features, in_features // 32, generator=generator) * 2e-4 + 1e-5).half()
    return q, d


# in 2,048: rows whose starts share an L1 set, which the kernel copies apart (csrc rows_apart)
@pytest.mark.parametrize("out_features, in_features", [(64, 64), (96, 1024), (1024, 3072), (64, 2048)])
@pytest.mark.parametrize("rows", [1, 5, 12, 13, 27, 300])
def test_products_equal_the_dequantized_weights(out_features, in_features, rows):
    layer = Q8Linear.from_blocks(*_blocks(out_features, in_features))
    weight = layer.dequantized_weight()  # [out, in] bf16, as a bf16 load of the file holds it
    x = torch.randn(rows, in_features).bfloat16()
    exact = x.float() @ weight.float().T  # the same products, summed in fp32 in one order
    got = layer(x)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
    # Only the final rounding to bf16 may differ: at most one bf16 step of each output.
    assert ((got.float() - exact).abs() <= exact.abs() * 2 ** -7 + 1e-6).all()
    assert torch.allclose(got.float(), F.linear(x, weight).float(), rtol=2 ** -7, atol=1e-6)


def _q8_0_rows(x: torch.Tensor) -> torch.Tensor:
    """x [rows, in] quantized per 32 inputs as llama.cpp quantizes activations: q = x x (127 / max |x|)
    rounded to nearest even, d = max |x| / 127, both in fp32 as the kernel computes them; d x q in fp64."""
    blocks = x.float().view(x.shape[0], -1, 32)
    largest = blocks.abs().amax(dim=-1, keepdim=True)
    # torch.div of two tensors, not 127 / largest: that is 127 x (1 / largest), rounded twice
    scale = torch.where(largest > 0, torch.div(torch.full_like(largest, 127), largest), torch.zeros_like(largest))
    return (torch.round(blocks * scale).double() * (largest / 127).double()).view(x.shape)


@pytest.mark.parametrize("out_features, in_features", [(64, 64), (96, 1024), (64, 2048)])
@pytest.mark.parametrize("rows", [1, 7, 12, 13, 27, 300])
def test_int8_input_products_are_q8_0_inputs_times_the_blocks(out_features, in_features, rows):
    q, d = _blocks(out_features, in_features)
    q[0, :32] = -128  # a file may hold -128: its q + 128 is 0
    layer = Q8Linear.from_blocks(q, d)
    values = pack_int8_input_tiles(q)
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(rows)).bfloat16()
    x[0, 32:64] *= 1e3  # one block of large inputs: its scale is its own, not the row's
    weight = (q.double().view(out_features, -1, 32) * d.double().unsqueeze(-1)).view(out_features, in_features)
    exact = _q8_0_rows(x) @ weight.T
    got = torch.ops.q3embed_cpu.q8_linear_int8(x, values, layer.scales)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
    # The integer sums are exact; the fp32 scaling of each block and the final bf16 rounding are not.
    assert ((got.double() - exact).abs() <= exact.abs() * 2 ** -7 + exact.abs().amax() * 1e-5).all()
    alone = torch.ops.q3embed_cpu.q8_linear_int8(x[-1:].contiguous(), values, layer.scales)
    assert torch.equal(alone[0], got[-1])  # a row's values do not depend on the rows beside it


def test_int8_input_swiglu_is_its_products_then_silu_times_up():
    q, d = _blocks(128, 1024)
    values, scales = pack_int8_input_tiles(q), Q8Linear.from_blocks(q, d).scales
    x = torch.randn(13, 1024).bfloat16()
    gate, up = torch.ops.q3embed_cpu.q8_linear_int8(x, values, scales).chunk(2, dim=-1)
    expected = torch.ops.q3embed_cpu.silu_mul(gate.contiguous(), up.contiguous())
    assert torch.equal(torch.ops.q3embed_cpu.q8_linear_int8_swiglu(x, values, scales), expected)


def test_blocks_come_back_as_given_and_round_like_a_bf16_load():
    q, d = _blocks(64, 96)
    layer = Q8Linear.from_blocks(q, d)
    got_q, got_d = layer.blocks()
    assert torch.equal(got_q, q) and torch.equal(got_d, d.float())
    expected = (q.float().view(64, 3, 32) * d.float().unsqueeze(-1)).view(64, 96).to(torch.bfloat16)
    assert torch.equal(layer.dequantized_weight(), expected)


def test_the_quantizer_makes_the_blocks_llama_cpp_makes():
    weight = torch.randn(64, 96) * 0.05
    weight[3, :32] = 0  # an all-zero block: d = 0, q = 0
    q, d = quantize_q8_0(weight)
    stored = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q8_0).reshape(64, 3, 34)
    assert np.array_equal(d.numpy(), stored[..., :2].copy().view(np.float16).reshape(64, 3))
    assert np.array_equal(q.numpy(), stored[..., 2:].copy().view(np.int8).reshape(64, 96))


def test_sizes_the_kernel_does_not_take_are_refused():
    assert not tiles_fit(48, 64) and not tiles_fit(64, 48) and tiles_fit(64, 64)
    with pytest.raises(ValueError, match="out % 32"):
        Q8Linear.from_blocks(*_blocks(48, 64))


def test_leading_dimensions_and_empty_inputs():
    layer = Q8Linear.from_blocks(*_blocks(64, 64))
    x = torch.randn(2, 3, 64).bfloat16()
    assert torch.equal(layer(x), layer(x.view(6, 64)).view(2, 3, 64))
    assert layer(torch.empty(0, 64, dtype=torch.bfloat16)).shape == (0, 64)


def test_fused_blocks_compute_each_part_bit_for_bit():
    parts = (Q8Linear.from_blocks(*_blocks(128, 64, 1)), Q8Linear.from_blocks(*_blocks(64, 64, 2)))
    fused = _concatenated(parts)
    assert isinstance(fused, Q8Linear)
    x = torch.randn(7, 64).bfloat16()
    assert torch.equal(fused(x), torch.cat([p(x) for p in parts], dim=1))


def test_a_part_in_blocks_beside_a_plain_one_is_dequantized():
    blocks = Q8Linear.from_blocks(*_blocks(64, 64, 3))
    plain = Linear(64, 32, bias=False, dtype=torch.bfloat16)
    fused = _concatenated((blocks, plain))
    assert isinstance(fused, Linear) and fused.weight.shape == (96, 64)
    assert torch.equal(fused.weight[:64], blocks.dequantized_weight())


def test_compiled_graphs_call_the_kernel():
    layer = Q8Linear.from_blocks(*_blocks(64, 64))
    x = torch.randn(5, 64).bfloat16()
    compiled = torch.compile(lambda v: torch.nn.functional.silu(layer(v)), fullgraph=True)
    assert torch.equal(compiled(x), torch.nn.functional.silu(layer(x)))


# ---------------------------------------------------------------- GGUF files


@pytest.fixture(scope="module")
def q8_file(tmp_path_factory, tiny_embedding_dir):
    return write_gguf(tiny_embedding_dir, tmp_path_factory.mktemp("q8") / "emb-Q8_0.gguf", file_type="Q8_0")


def _model_bytes(model: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_a_q8_0_file_in_bf16_keeps_its_blocks_and_its_size(q8_file):
    kwargs = dict(max_length=512, dtype=torch.bfloat16, device=torch.device("cpu"))
    kept = load_gguf_qwen3(q8_file, **kwargs).model
    expanded = load_gguf_qwen3(q8_file, q8_blocks=False, **kwargs).model
    linears = [m for m in kept.modules() if isinstance(m, Q8Linear)]
    assert len(linears) == 7 * kept.config.num_hidden_layers and isinstance(kept.embed_tokens, Int8Embedding)
    assert not any(isinstance(m, Q8Linear) for m in expanded.modules())
    file_bytes = q8_file.stat().st_size
    assert _model_bytes(kept) <= 1.1 * file_bytes < _model_bytes(expanded)  # the tiny model is mostly its table
    ids = torch.arange(100, 140)
    assert torch.equal(kept.embed_tokens(ids), expanded.embed_tokens(ids))  # the same bf16 rows


def test_vectors_from_blocks_equal_the_dequantized_ones(q8_file, monkeypatch):
    blocks = Embedder(str(q8_file), dtype="bfloat16", device="cpu").encode(TEXTS)
    fp32 = Embedder(str(q8_file), dtype="float32", device="cpu").encode(TEXTS)
    monkeypatch.setattr("q3embed.weights.gguf.cpu_kernels_run", lambda dtype, device: False)  # without them
    dequantized = Embedder(str(q8_file), dtype="bfloat16", device="cpu").encode(TEXTS)
    # The same weights and products in bf16; only the order of the fp32 sums differs.
    assert (blocks * dequantized).sum(axis=1).min() >= 0.9999
    assert (blocks * fp32).sum(axis=1).min() >= 0.999


def test_int8_on_a_q8_0_file_keeps_its_blocks_and_quantizes_the_inputs(q8_file):
    # quantize="int8": llama.cpp's computation of the file, its own blocks times Q8_0 inputs.
    if not cpu_kernels_preferred():
        pytest.skip("the engine keeps Q8_0 blocks only where q3embed's CPU kernels are preferred (no AMX)")
    file = Embedder(str(q8_file), dtype="bfloat16", device="cpu")
    int8 = Embedder(str(q8_file), dtype="bfloat16", device="cpu", quantize="int8")
    models = file._backend.model, int8._backend.model  # noqa: SLF001
    pairs = [(a, b) for a, b in zip(*(m.modules() for m in models)) if isinstance(a, Q8Linear)]
    assert len(pairs) == 4 * models[0].config.num_hidden_layers  # qkv, o, gate_up, down
    for kept, repacked in pairs:
        assert not kept.int8_inputs and repacked.int8_inputs
        assert all(torch.equal(a, b) for a, b in zip(kept.blocks(), repacked.blocks()))  # the file's blocks
    fp32 = Embedder(str(q8_file), dtype="float32", device="cpu").encode(TEXTS)
    vectors = int8.encode(TEXTS)
    assert (vectors * fp32).sum(axis=1).min() >= 0.999
    assert np.array_equal(int8.encode(TEXTS[:1]), vectors[:1])  # a text alone, as in a batch


# ---------------------------------------------------------------- bf16 weights in tiles


@pytest.mark.parametrize("out_features, in_features", [(64, 64), (1024, 3072), (4096, 1024), (96, 2048), (32, 4096)])
@pytest.mark.parametrize("rows", [1, 7, 13, 14, 15, 27, 29, 300])  # one pass up to 14 rows, then even passes
@pytest.mark.parametrize("layout", ["contiguous", "a view of wider rows"])
def test_the_bf16_kernel_computes_the_bf16_products(out_features, in_features, rows, layout):
    weight = (torch.randn(out_features, in_features) * 0.05).bfloat16()
    x = torch.randn(rows, in_features + (0 if layout == "contiguous" else 64)).bfloat16()[:, :in_features]
    got = torch.ops.q3embed_cpu.bf16_linear(x, pack_tiles(weight))
    exact = x.float() @ weight.float().T
    assert got.shape == (rows, out_features) and got.dtype == torch.bfloat16
    assert ((got.float() - exact).abs() <= exact.abs() * 2 ** -7 + 1e-5).all()


def test_a_linear_packed_for_the_kernel_computes_what_it_did(monkeypatch):
    monkeypatch.setattr("q3embed.model.block_linear.cpu_kernels_preferred", lambda: True)
    layer = Linear(96, 64, bias=True, dtype=torch.bfloat16)
    x = torch.randn(2, 5, 96).bfloat16()
    before = layer(x)
    assert layer.pack_for_kernel() and layer.tiled and layer.packed
    assert not layer.pack_for_kernel() and not layer.pack_for_onednn()  # once, one layout
    torch.testing.assert_close(layer(x), before, rtol=2 ** -7, atol=1e-2)
    assert not Linear(96, 48, dtype=torch.bfloat16).pack_for_kernel()  # not whole tiles
    assert not Linear(96, 64).pack_for_kernel()  # fp32


def test_a_q8_0_reranker_in_bf16_scores_on_its_blocks(tmp_path, tiny_reranker_dir, monkeypatch):
    from q3embed import Reranker
    from texts import QUERIES

    if not cpu_kernels_preferred():
        pytest.skip("the engine keeps Q8_0 blocks only where q3embed's CPU kernels are preferred (no AMX)")
    path = write_gguf(tiny_reranker_dir, tmp_path / "rr-Q8_0.gguf", file_type="Q8_0", kind="reranker")
    blocks = Reranker(str(path), dtype="bfloat16", device="cpu")
    assert any(isinstance(m, Q8Linear) for m in blocks._scorer.model.modules())  # noqa: SLF001
    monkeypatch.setattr("q3embed.weights.gguf.cpu_kernels_run", lambda dtype, device: False)
    dequantized = Reranker(str(path), dtype="bfloat16", device="cpu")
    for query in QUERIES:  # the prefix cache, the last layer's rows: every reranker path on blocks
        ours = np.array(blocks.score(query, DOCUMENTS))
        assert np.abs(ours - np.array(dequantized.score(query, DOCUMENTS))).max() <= 2e-2


def test_an_edit_to_the_shared_header_changes_the_build_flags(tmp_path, monkeypatch):
    # cpp_extension rebuilds when the sources or the flags change, not the headers they include:
    # the headers' digest goes into the flags instead.
    from q3embed.model import block_linear

    header = tmp_path / "simd.h"
    header.write_text("// one\n")
    monkeypatch.setattr(block_linear, "_HEADERS", (header,))
    before = block_linear._headers_digest()
    header.write_text("// two\n")
    assert block_linear._headers_digest() != before


def test_the_kernels_include_only_the_headers_whose_digest_is_tracked():
    from q3embed.model import block_linear

    tracked = {header.name for header in block_linear._HEADERS}
    for source in block_linear._SOURCES + block_linear._HEADERS:
        included = {line.split('"')[1] for line in source.read_text().splitlines() if line.startswith('#include "')}
        assert included <= tracked, f"{source.name} includes {included - tracked}, which no digest tracks"
