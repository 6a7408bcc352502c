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
