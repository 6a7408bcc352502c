"""model/linear.py: the decoder's Linear sends fp32 products of few rows on a CPU to oneDNN and
everything else to F.linear, computing the same values either way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from q3embed.model.linear import ONEDNN_MAX_ROWS, Linear, onednn_linear_available


def _ops(layer: Linear, x: torch.Tensor) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        layer(x)
    return {event.key for event in prof.key_averages()}


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch has no oneDNN linear")
@pytest.mark.parametrize("rows", [1, 27, ONEDNN_MAX_ROWS, ONEDNN_MAX_ROWS + 1, 1024])
def test_few_rows_go_to_onednn_many_to_f_linear_with_the_same_values(rows):
    torch.manual_seed(rows)
    layer = Linear(384, 200, bias=True)
    x = torch.randn(rows, 384)
    with torch.inference_mode():
        got, ops = layer(x), _ops(layer, x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert ("mkldnn::_linear_pointwise" in ops) == (rows <= ONEDNN_MAX_ROWS), ops


def test_other_dtypes_shapes_and_gradients_stay_on_f_linear():
    layer = Linear(64, 32, bias=False)
    x = torch.randn(4, 64)
    ops = _ops(layer, x)  # gradients enabled: oneDNN's op has no backward
    assert "mkldnn::_linear_pointwise" not in ops
    with torch.inference_mode():
        assert "mkldnn::_linear_pointwise" not in _ops(layer, x.reshape(2, 2, 64))  # 3-D input
        bf16 = layer.to(torch.bfloat16)
        assert bf16(x.bfloat16()).dtype == torch.bfloat16
        assert "mkldnn::_linear_pointwise" not in _ops(bf16, x.bfloat16())


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch has no oneDNN linear")
@pytest.mark.parametrize("rows", [1, 27, 300])
def test_a_packed_bf16_weight_computes_what_the_plain_one_does(rows):
    torch.manual_seed(rows)
    layer = Linear(384, 200, bias=True).to(torch.bfloat16)
    plain, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    x = torch.randn(rows, 384, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = F.linear(x, plain, bias)
        assert layer.pack_for_onednn() and layer.packed
        assert not layer.pack_for_onednn()  # once only
        got = layer(x)
        three_d = layer(x.reshape(1, rows, 384))
        strided = layer(x.T.contiguous().T)  # the same values, not row-major
    assert got.dtype == torch.bfloat16 and three_d.shape == (1, rows, 200)
    assert torch.allclose(got.float(), expected.float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(three_d[0], got) and torch.equal(strided, got)


def test_only_bf16_weights_on_a_cpu_are_packed():
    layers = [Linear(64, 32), Linear(64, 32).to(torch.float16), Linear(64, 32).to(torch.bfloat16)]
    assert [layer.pack_for_onednn() for layer in layers] == [False, False, onednn_linear_available()]
    assert not layers[0].packed and not layers[1].packed


def test_kernels_that_cannot_be_built_fall_back_and_say_why(caplog, tmp_path):
    from q3embed.model import block_linear

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with caplog.at_level("INFO", logger="q3embed"):
        assert block_linear.cpu_kernels_available.__wrapped__(blocked / "kernels") is False
    assert "q3embed's CPU kernels off" in caplog.text
    assert "g++ ninja-build" in caplog.text or "this CPU lacks" in caplog.text
