"""Checkpoint layouts that must load, and broken ones that must fail with one clear message."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from q3embed import CheckpointError, Embedder, ModelNotFoundError, Reranker
from q3embed.testing.checkpoints import CheckpointSpec, build_checkpoint
from texts import DOCUMENTS, MIXED_TEXTS

TEXTS = MIXED_TEXTS[:5]


@pytest.fixture(scope="module")
def baseline(tiny_embedding_dir):
    return Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu").encode(TEXTS)


@pytest.mark.parametrize(
    "spec",
    [
        CheckpointSpec(rope_form="rope_parameters"),
        CheckpointSpec(shards=3),
        CheckpointSpec(prefixed_keys=True),
        CheckpointSpec(eos_post_processor=False),
        CheckpointSpec(kind="reranker", prefixed_keys=True),  # a CausalLM checkpoint embeds too
    ],
    ids=["rope_parameters", "sharded", "model-prefix", "no-eos-post-processor", "causal-lm"],
)
def test_layouts_give_the_same_vectors(tmp_path, baseline, spec):
    model_dir = build_checkpoint(tmp_path / "m", spec)
    vectors = Embedder(str(model_dir), dtype="float32", device="cpu").encode(TEXTS)
    np.testing.assert_allclose(vectors, baseline, atol=1e-6)


def test_bf16_checkpoint_loads_in_fp32_and_bf16(tmp_path):
    model_dir = build_checkpoint(tmp_path / "m", CheckpointSpec(dtype=torch.bfloat16))
    fp32 = Embedder(str(model_dir), dtype="float32", device="cpu").encode(TEXTS)
    bf16 = Embedder(str(model_dir), dtype="bfloat16", device="cpu")
    assert bf16.info.dtype == "bfloat16"
    assert (bf16.encode(TEXTS) * fp32).sum(axis=1).min() > 0.99


def _mapped(path) -> bool:
    """Whether this process has `path` memory-mapped (/proc/self/maps)."""
    return any(line.endswith(str(path)) for line in Path("/proc/self/maps").read_text().splitlines())


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("kind", ["embedding", "reranker"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_loaded_model_keeps_no_part_of_its_checkpoint_mapped(tmp_path, kind, dtype):
    # In the file's own dtype nothing is converted: every tensor would still be the file's
    # memory map, and any one left in the model would keep the whole file mapped and resident.
    spec = CheckpointSpec(kind=kind, dtype=getattr(torch, dtype), prefixed_keys=kind == "reranker")
    weights = build_checkpoint(tmp_path / "m", spec) / "model.safetensors"
    model = (Embedder if kind == "embedding" else Reranker)(str(weights.parent), dtype=dtype, device="cpu")
    gc.collect()
    assert not _mapped(weights)  # while the model lives
    del model


def test_tied_and_separate_lm_head_score_alike(tmp_path, tiny_reranker_dir):
    tied_dir = build_checkpoint(tmp_path / "tied", CheckpointSpec(kind="reranker", tied_lm_head=True, prefixed_keys=True))
    untied_dir = tmp_path / "untied"
    shutil.copytree(tied_dir, untied_dir)
    state = load_file(str(tied_dir / "model.safetensors"))
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, str(untied_dir / "model.safetensors"))
    config = json.loads((untied_dir / "config.json").read_text())
    (untied_dir / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    tied = Reranker(str(tied_dir), dtype="float32", device="cpu").score("q", DOCUMENTS)
    untied = Reranker(str(untied_dir), dtype="float32", device="cpu").score("q", DOCUMENTS)
    np.testing.assert_allclose(tied, untied, atol=1e-6)


def test_reranker_without_lm_head_is_refused(tmp_path):
    model_dir = build_checkpoint(tmp_path / "m", CheckpointSpec())  # embedding layout, no lm_head
    with pytest.raises(CheckpointError, match="no lm_head.weight and tie_word_embeddings is false"):
        Reranker(str(model_dir), dtype="float32", device="cpu")


def _rewrite(model_dir, change):
    state = load_file(str(model_dir / "model.safetensors"))
    change(state)
    save_file(state, str(model_dir / "model.safetensors"))


def test_missing_unexpected_and_misshaped_tensors_are_listed_in_one_error(tmp_path):
    model_dir = build_checkpoint(tmp_path / "m", CheckpointSpec())

    def damage(state):
        del state["layers.1.mlp.up_proj.weight"]
        del state["norm.weight"]
        state["layers.0.self_attn.extra.weight"] = torch.zeros(2)
        state["layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3)

    _rewrite(model_dir, damage)
    with pytest.raises(CheckpointError) as caught:
        Embedder(str(model_dir), dtype="float32", device="cpu")
    message = str(caught.value)
    assert "missing (2): layers.1.mlp.up_proj.weight, norm.weight" in message
    assert "unexpected (1): layers.0.self_attn.extra.weight" in message
    assert "wrong shape (1): layers.0.self_attn.q_proj.weight [3, 3] != [128, 64]" in message


@pytest.mark.parametrize(
    "breakage, pattern",
    [
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "tokenizer.json").unlink(), "has no tokenizer.json"),
        (lambda d: (d / "tokenizer.json").write_text('{"a": 1}'), "not a valid tokenizer.json"),
        (lambda d: (d / "model.safetensors").unlink(), r"holds no \*.safetensors weights"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "not a readable safetensors file"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64})),
         "missing keys vocab_size"),
        (lambda d: (d / "config.json").write_text(json.dumps({
            **json.loads((d / "config.json").read_text()), "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})),
         "RoPE scaling .* is not supported"),
    ],
    ids=["no-config", "bad-config", "no-tokenizer", "bad-tokenizer", "no-weights", "corrupt-weights",
         "incomplete-config", "rope-scaling"],
)
def test_broken_model_directories_fail_clearly(tmp_path, breakage, pattern):
    model_dir = build_checkpoint(tmp_path / "m", CheckpointSpec())
    breakage(model_dir)
    with pytest.raises(CheckpointError, match=pattern):
        Embedder(str(model_dir), dtype="float32", device="cpu")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Embedder(str(tmp_path / "nowhere"), device="cpu")


def test_unreachable_hub_names_the_model_and_how_to_pass_a_path(hubs):
    with pytest.raises(ModelNotFoundError) as caught:
        Embedder("q3embed-tests/no-such-model", device="cpu")
    message = str(caught.value)
    assert "'q3embed-tests/no-such-model' is not in any local cache and could not be downloaded" in message
    assert "hf download q3embed-tests/no-such-model --local-dir ./no-such-model" in message
    assert "--model ./no-such-model" in message
    assert "\n" not in message
