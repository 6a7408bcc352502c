"""quantize="int8" (model/quantized.py): the decoder's linear layers as Q8_0 blocks times inputs
quantized to Q8_0 blocks where the Q8_0 kernels run (bf16 on AVX512-BF16), else as fbgemm's int8
linear with activations quantized per token, and the embedding table as Q8_0 blocks. An approximation, opt-in:
these tests bound how far it may drift from the exact model (the 0.6B figures are in
docs/benchmarks.md), and check that it is refused where it cannot run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3embed import Embedder, Reranker
from q3embed.engine.device import resolve_quantize
from q3embed.engine.memory import release_freed_memory
from q3embed.engine.options import ModelOptions
from q3embed.errors import ConfigurationError
from q3embed.model.block_linear import Q8Linear, cpu_kernels_preferred
from q3embed.model.quantized import Int8Embedding, Int8Linear
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES


def test_an_int8_linear_computes_what_the_linear_does():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96, bias=True)
    x = torch.randn(3, 5, 256)  # [..., in]: any leading shape
    exact = linear(x)
    for dtype in (torch.float32, torch.bfloat16):
        got = Int8Linear(linear)(x.to(dtype))
        assert got.shape == exact.shape and got.dtype == dtype
        cosines = torch.nn.functional.cosine_similarity(got.float().reshape(-1, 96), exact.reshape(-1, 96), dim=1)
        assert cosines.min() >= 0.999


def test_each_token_keeps_its_own_precision_beside_a_large_one():
    """One row a thousand times larger than the others (as a decoder's first tokens can be) must
    not take the small rows' precision: with one scale for the whole batch their int8 values
    would be all zero or +-1."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 128, bias=False)
    x = torch.randn(4, 512)
    x[0] *= 1000
    got = Int8Linear(linear)(x)
    cosines = torch.nn.functional.cosine_similarity(got, linear(x), dim=1)
    assert cosines.min() >= 0.999, cosines


def test_a_row_of_zeros_gives_the_bias():
    linear = torch.nn.Linear(64, 16, bias=True)
    got = Int8Linear(linear)(torch.zeros(2, 64))
    assert torch.allclose(got, linear.bias.detach().expand(2, 16), atol=1e-6)


def test_a_q8_0_table_comes_back_bit_for_bit():
    """GGUF's own Q8_0 quantizer, then its dequantizer (what the loader does): the int8 table holds
    the file's blocks unchanged, so every looked-up row is the dequantized row exactly."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    table = rng.standard_normal((300, 96)).astype(np.float32)
    table[7, :32] *= 50  # a block of large values beside ordinary ones
    table[9, 32:64] = 0  # an all-zero block
    dequantized = gguf.quants.dequantize(gguf.quants.quantize(table, gguf.GGMLQuantizationType.Q8_0),
                                         gguf.GGMLQuantizationType.Q8_0)
    embedding = torch.nn.Embedding.from_pretrained(torch.from_numpy(dequantized))
    ids = torch.arange(300)
    assert torch.equal(Int8Embedding.quantized(embedding)(ids), embedding(ids))


def test_an_int8_table_of_a_bf16_checkpoint_stays_near_it():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(500, 64).to(torch.bfloat16)
    ids = torch.tensor([0, 3, 499, 3])
    got = Int8Embedding.quantized(embedding)(ids)
    assert got.dtype == torch.bfloat16
    cosines = torch.nn.functional.cosine_similarity(got.float(), embedding(ids).float(), dim=1)
    assert cosines.min() >= 0.9999


def test_freed_memory_is_handed_back_on_glibc():
    assert release_freed_memory() is True  # Linux with glibc: malloc_trim exists


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_int8_model_stays_near_the_exact_one(tiny_embedding_dir, dtype):
    exact = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", compile="off").encode(MIXED_TEXTS)
    int8 = Embedder(str(tiny_embedding_dir), dtype=dtype, device="cpu", compile="off", quantize="int8")
    assert int8.info.quantize == "int8"
    layer = int8._backend.model.layers[0]  # noqa: SLF001
    kind = Q8Linear if dtype == "bfloat16" and cpu_kernels_preferred() else Int8Linear
    assert isinstance(layer.self_attn.qkv_proj, kind) and isinstance(layer.mlp.down_proj, kind)
    assert kind is Int8Linear or layer.mlp.gate_up_proj.int8_inputs  # int8 products, not weight-only
    assert isinstance(int8._backend.model.embed_tokens, Int8Embedding)  # noqa: SLF001
    cosines = (int8.encode(MIXED_TEXTS) * exact).sum(axis=1)
    assert cosines.min() >= 0.999, cosines.min()
    assert np.abs(int8.encode(QUERIES[0]) - int8.encode(QUERIES[0])).max() == 0  # deterministic


def test_the_int8_reranker_scores_near_the_exact_one(tiny_reranker_dir):
    exact = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", compile="off")
    int8 = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", compile="off", quantize="int8")
    difference = np.abs(np.array(int8.score(QUERIES[0], DOCUMENTS)) - np.array(exact.score(QUERIES[0], DOCUMENTS)))
    assert difference.max() <= 0.02


def test_int8_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigurationError, match="quantize must be one of none, int8"):
        ModelOptions(quantize="int4")
    with pytest.raises(ConfigurationError, match="for CPUs"):
        resolve_quantize("int8", torch.device("cuda"), "auto")
    with pytest.raises(ConfigurationError, match="compile=max do not combine"):
        resolve_quantize("int8", torch.device("cpu"), "max")
    assert resolve_quantize("none", torch.device("cuda"), "max") == "none"
