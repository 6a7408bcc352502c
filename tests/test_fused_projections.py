"""Fused projections (q/k/v and gate/up as one product each) compute the loaded layers' values."""

from __future__ import annotations

import pytest
import torch

from q3embed.engine.batch import pack
from q3embed.model.heads import last_token_indices
from q3embed.model.linear import pack_decoder_linears
from q3embed.weights.checkpoint import load_qwen3_dir

SEQUENCES = [[5, 17, 300, 2, 9], list(range(40, 77)), [151643]]


def _outputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, positions, seq_lens = pack(SEQUENCES, torch.device("cpu"))
    with torch.inference_mode():
        full = model(input_ids, positions, seq_lens)
        rows = model(input_ids, positions, seq_lens, rows=last_token_indices(seq_lens))
    return full, rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_projections_equal_the_loaded_layers_bit_for_bit(tiny_embedding_dir, dtype, packed):
    model = load_qwen3_dir(tiny_embedding_dir, max_length=512, dtype=dtype, device=torch.device("cpu")).model
    if packed:
        pack_decoder_linears(model)  # bf16 only: fp32 stays plain
    loaded_full, loaded_rows = _outputs(model)

    fused = load_qwen3_dir(tiny_embedding_dir, max_length=512, dtype=dtype, device=torch.device("cpu")).model
    fused.fuse_projections()
    if packed:
        pack_decoder_linears(fused)
    fused_full, fused_rows = _outputs(fused)

    assert torch.equal(fused_full, loaded_full)
    assert torch.equal(fused_rows, loaded_rows)
    attention, mlp = fused.layers[0].self_attn, fused.layers[0].mlp
    assert not hasattr(attention, "q_proj") and not hasattr(mlp, "gate_proj")
    cfg = fused.config
    assert attention.qkv_proj.out_features == (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    assert mlp.gate_up_proj.out_features == 2 * cfg.intermediate_size


def test_the_engine_runs_fused_projections(embedder):
    layer = embedder._backend.model.layers[0]  # noqa: SLF001
    assert layer.self_attn.qkv_proj is not None and layer.mlp.gate_up_proj is not None
