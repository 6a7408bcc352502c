"""The engine packs a bf16 decoder's weights for oneDNN on a CPU (model/linear.py), computes the
same vectors as with plain weights, and leaves them plain where something else owns them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from q3embed import Embedder
from q3embed.engine.device import Placement
from q3embed.engine.qwen3_backend import prepare_qwen3_model
from q3embed.model.linear import Linear, onednn_linear_available
from q3embed.weights.loading import load_qwen3

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="this torch has no oneDNN linear")

TEXTS = ["What is the capital of China?", "Gravity is a force that attracts two bodies towards each other. " * 6]


def _linears(model: torch.nn.Module) -> list[Linear]:
    return [m for m in model.modules() if isinstance(m, Linear)]


def _placement(**changes) -> Placement:
    fields = {"device": torch.device("cpu"), "dtype": torch.bfloat16, "compile_after": None,
              "max_batch_tokens": None} | changes
    return Placement(**fields)


def test_a_bf16_embedder_packs_every_decoder_weight_and_embeds_as_the_plain_model(tiny_embedding_dir):
    embedder = Embedder(tiny_embedding_dir, dtype="bfloat16", device="cpu", compile="off")
    model = embedder._backend.model  # noqa: SLF001  (the test looks inside on purpose)
    layers = _linears(model)
    assert layers and all(layer.packed for layer in layers)
    packed = embedder.encode(TEXTS)
    for layer in layers:  # the same model with its weights back in torch's plain layout
        layer.weight = torch.nn.Parameter(layer.weight.to_dense(), requires_grad=False)
    plain = embedder.encode(TEXTS)
    assert np.allclose(packed, plain, atol=1e-6), np.abs(packed - plain).max()


@pytest.mark.parametrize("changes", [{"dtype": torch.float32}, {"graphs": "inductor"}, {"quantize": "int8"}])
def test_weights_stay_plain_in_fp32_under_inductor_and_for_int8(tiny_embedding_dir, changes):
    placement = _placement(**changes)
    loaded = load_qwen3(tiny_embedding_dir, max_length=64, dtype=placement.dtype, device=placement.device)
    prepare_qwen3_model(loaded, placement)
    assert not any(layer.packed for layer in _linears(loaded.model))
