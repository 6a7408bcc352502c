"""GGUF files: the tiny random Qwen3 models written as llama.cpp writes them, read back.

The same weights must give the same vectors and scores as the safetensors checkpoints, the
tokenizer rebuilt from the GGUF metadata must equal tokenizer.json, and broken files must fail
with one clear error.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from texts import DOCUMENTS, MIXED_TEXTS, QUERIES
from tokenizers import Tokenizer

import q3embed.weights.gguf as gguf_weights
import q3embed.weights.resolve as resolve
from q3embed import CheckpointError, Embedder, ModelNotFoundError, Reranker
from q3embed.cli import main
from q3embed.testing.checkpoints import (
    ENDOFTEXT_ID,
    CheckpointSpec,
    build_checkpoint,
    qwen_tokenizer_dir,
)
from q3embed.testing.gguf_writer import write_gguf
from q3embed.text.gguf_tokenizer import tokenizer_from_gguf
from q3embed.text.prompts import RERANK_PREFIX, RERANK_SUFFIX, query_text
from q3embed.text.tokenizer import Qwen3Tokenizer
from q3embed.weights.gguf_file import GgufFile

Q = gguf.GGMLQuantizationType
ENDOFTEXT = ENDOFTEXT_ID
TEXTS = MIXED_TEXTS + [query_text(q) for q in QUERIES]
MULTILINGUAL = MIXED_TEXTS + DOCUMENTS + QUERIES + [
    RERANK_PREFIX,
    RERANK_SUFFIX,
    "cafe\u0301 e\u0301te\u0301 (decomposed accents: NFC-normalised by tokenizer.json)",
    "日本語のテキスト、한국어 텍스트, русский текст, نص عربي, हिन्दी पाठ, ελληνικά, עברית",
    "<think>x</think> <tool_call>{}</tool_call> <|fim_prefix|>a<|fim_suffix|> <|im_end|>",
    "\t\n\r   tabs, \u00a0no-break and\u3000ideographic spaces  \n\n",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３, numbers 1234567890 3.14159",
    "URL https://example.com/a?b=c#d, e-mail a.b@example.org, emoji 👩‍💻🇨🇳",
]


@functools.cache
def _fp32(model: str, cls: type = Embedder, **kwargs) -> Embedder | Reranker:
    """One load per model and options: each GGUF load rebuilds the tokenizer (~1 s here)."""
    return cls(model, dtype="float32", device="cpu", **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_embedding_dir, tiny_reranker_dir) -> dict[str, Path]:
    """The tiny models as GGUF: embedding F16 and Q8_0; rerankers with each head layout."""
    out = tmp_path_factory.mktemp("gguf")
    tied_spec = CheckpointSpec(kind="reranker", tied_lm_head=True, prefixed_keys=True, eos_post_processor=False)
    tied_dir = build_checkpoint(out / "tied-reranker", tied_spec)
    return {
        "tied_dir": tied_dir,
        "F16": write_gguf(tiny_embedding_dir, out / "emb-F16.gguf", file_type="F16"),
        "Q8_0": write_gguf(tiny_embedding_dir, out / "emb-Q8_0.gguf", file_type="Q8_0"),
        "rr-cls": write_gguf(tiny_reranker_dir, out / "rr-cls-Q8_0.gguf", file_type="Q8_0", kind="reranker"),
        "rr-output": write_gguf(tiny_reranker_dir, out / "rr-output-F16.gguf", kind="reranker",
                                reranker_head="output"),
        "rr-tied": write_gguf(tied_dir, out / "rr-tied-F16.gguf", kind="reranker", reranker_head="output"),
    }


@pytest.fixture(scope="module")
def reference(embedder) -> np.ndarray:
    return embedder.encode(TEXTS)


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("file_type, min_cosine", [("F16", 0.9999), ("Q8_0", 0.999)])
def test_embeddings_equal_the_safetensors_ones(files, reference, file_type, min_cosine):
    model = _fp32(str(files[file_type]))
    cosines = (model.encode(TEXTS) * reference).sum(axis=1)
    assert cosines.min() >= min_cosine, cosines
    assert model.info.kind == "qwen3" and model.info.dimensions == 64


def test_bf16_engine_from_q8_0(files, reference):
    vectors = Embedder(str(files["Q8_0"]), dtype="bfloat16", device="cpu").encode(TEXTS)
    assert (vectors * reference).sum(axis=1).min() > 0.99


def test_cli_takes_a_gguf_model(capsys, files):
    code = main(["embed", "--model", str(files["F16"]), "--dtype", "float32", "--device", "cpu", *QUERIES])
    out = capsys.readouterr().out
    assert code == 0, out
    vectors = np.array([json.loads(line)["embedding"] for line in out.splitlines()], dtype=np.float32)
    np.testing.assert_allclose(vectors, _fp32(str(files["F16"])).encode(QUERIES), atol=1e-6)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_from_metadata_equals_tokenizer_json(files):
    reference = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
    rebuilt = tokenizer_from_gguf(GgufFile.open(files["Q8_0"]).metadata, "test")
    for text in MULTILINGUAL:
        expected = reference.encode(text, add_special_tokens=False)
        got = rebuilt.encode(text, add_special_tokens=False)
        assert got.ids == expected.ids, text
        assert got.offsets == expected.offsets, text
    assert rebuilt.decode(rebuilt.encode(MULTILINGUAL[5]).ids) == MULTILINGUAL[5]


def test_every_input_ends_in_one_endoftext_whatever_the_file_says(files, tiny_embedding_dir):
    # The reranker checkpoints' tokenizer.json has no EOS post-processor (no add_eos_token in their
    # GGUF, like files converted before the upstream fix); the embedding one appends it.
    assert GgufFile.open(files["F16"]).metadata["tokenizer.ggml.add_eos_token"] is True
    assert "tokenizer.ggml.add_eos_token" not in GgufFile.open(files["rr-tied"]).metadata
    reference = Qwen3Tokenizer.from_dir(tiny_embedding_dir)
    rebuilt = [Qwen3Tokenizer(tokenizer_from_gguf(GgufFile.open(files[name]).metadata, name))
               for name in ("F16", "rr-tied")]  # what load_gguf_qwen3 builds, without the weights
    for max_length in (16, 8192):
        reference.max_length = max_length
        expected = reference.encode_embedding_inputs(MIXED_TEXTS)
        for tokenizer in rebuilt:
            tokenizer.max_length = max_length
            ids = tokenizer.encode_embedding_inputs(MIXED_TEXTS)
            assert ids == expected
            # MIXED_TEXTS[-1] spells <|endoftext|> in its text: leave it out of the count.
            assert all(seq[-1] == ENDOFTEXT and seq.count(ENDOFTEXT) == 1 for seq in ids[:-1])


# ---------------------------------------------------------------- rerankers


@pytest.mark.parametrize("name, tolerance", [("rr-cls", 1e-2), ("rr-output", 1e-3)])
def test_reranker_scores_equal_the_safetensors_ones(files, reranker, name, tolerance):
    model = _fp32(str(files[name]), Reranker)
    for query in QUERIES:
        ours, expected = np.array(model.score(query, DOCUMENTS)), np.array(reranker.score(query, DOCUMENTS))
        # A swapped yes/no row would give 1 - p (here ~0.5 away): far outside the tolerance.
        assert np.abs(ours - expected).max() <= tolerance


def test_tied_reranker_uses_the_token_embedding_rows(files):
    expected = _fp32(str(files["tied_dir"]), Reranker).score(QUERIES[1], DOCUMENTS)
    ours = _fp32(str(files["rr-tied"]), Reranker).score(QUERIES[1], DOCUMENTS)
    np.testing.assert_allclose(ours, expected, atol=1e-3)


def test_embedding_gguf_is_not_a_reranker(files):
    with pytest.raises(CheckpointError, match="is an embedding model .* not a reranker"):
        _fp32(str(files["F16"]), Reranker)


# ---------------------------------------------------------------- broken files


def _truncate(size):
    return lambda data: data[:size] if isinstance(size, int) else data[: int(len(data) * size)]


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (_truncate(0.9), r"tensor \S+ needs bytes .* it is truncated"),
        (_truncate(200_000), "ends inside the metadata .* truncated"),
        (_truncate(0), "not a readable GGUF file"),
        (lambda data: b"\x00" * 64, "does not start with the GGUF magic"),
        (lambda data: data[:8] + (2**40).to_bytes(8, "little") + data[16:], "claims 1099511627776 tensors"),
    ],
    ids=["truncated-data", "truncated-metadata", "empty", "not-gguf", "corrupt-count"],
)
def test_broken_files_fail_clearly(tmp_path, files, damage, pattern):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(damage(files["Q8_0"].read_bytes()))
    with pytest.raises(CheckpointError, match=pattern):
        _fp32(str(broken))


def test_missing_unexpected_and_misshaped_tensors_are_listed(files):
    file = GgufFile.open(files["F16"])
    del file.tensors["blk.1.ffn_up.weight"]
    file.tensors["blk.0.attn_extra.weight"] = file.tensors["blk.0.attn_norm.weight"]
    file.tensors["blk.0.attn_q.weight"] = file.tensors["blk.0.ffn_down.weight"]
    with torch.device("meta"):
        model = gguf_weights.Qwen3Model(gguf_weights.gguf_qwen3_config(file))
    with pytest.raises(CheckpointError) as caught:
        gguf_weights._locate(file, {k: v.shape for k, v in model.state_dict().items()}, 2)
    message = str(caught.value)
    assert "does not match the Qwen3 architecture in its GGUF metadata" in message
    assert "missing (1): blk.1.ffn_up.weight" in message
    assert "unexpected (1): blk.0.attn_extra.weight" in message
    assert "wrong shape (1): blk.0.attn_q.weight [64, 128] != [128, 64]" in message


def _write(path: Path, tensors: dict[str, tuple[np.ndarray, Q]], arch: str = "qwen3") -> GgufFile:
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufFile.open(path)


def test_unsupported_type_and_architecture_are_named(tmp_path):
    data = gguf.quants.quantize(np.ones((4, 64), np.float32), Q.Q4_0)
    file = _write(tmp_path / "q4_0.gguf", {"blk.0.attn_q.weight": (data, Q.Q4_0)}, arch="llama")
    with pytest.raises(CheckpointError, match="stored as Q4_0, which q3embed does not read; supported types: F32"):
        gguf_weights.tensor_to_torch(file, file.tensors["blk.0.attn_q.weight"], torch.float32)
    with pytest.raises(CheckpointError, match="general.architecture is 'llama'"):
        gguf_weights.gguf_qwen3_config(file)


# ---------------------------------------------------------------- tensor types


def _k_blocks(qtype: Q, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks [rows, bytes] with finite fp16 scales (gguf cannot quantize these)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, 512 // block, size), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, (rows, 512 // block, 2)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q6_K:
        raw[..., -2:] = scales[..., :2]  # d is the last field
    else:
        raw[..., 0:4] = scales  # d, dmin are the first two
    return raw.reshape(rows, -1)


def test_every_supported_type_reads_like_the_reference_dequantizer(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((40, 512)).astype(np.float32)
    stored = {"F32": (values, Q.F32), "F16": (values.astype(np.float16), Q.F16),
              "BF16": (gguf.quants.quantize(values, Q.BF16), Q.BF16),
              "Q8_0": (gguf.quants.quantize(values, Q.Q8_0), Q.Q8_0),
              **{q.name: (_k_blocks(q, 40, rng), q) for q in (Q.Q4_K, Q.Q5_K, Q.Q6_K)}}
    file = _write(tmp_path / "types.gguf", stored)
    monkeypatch.setattr(gguf_weights, "_CHUNK_VALUES", 512 * 7)  # several chunks, the last one short
    for name, (data, qtype) in stored.items():
        expected = torch.from_numpy(gguf.quants.dequantize(data, qtype)).reshape(40, 512)
        got = gguf_weights.tensor_to_torch(file, file.tensors[name], torch.float32)
        assert got.shape == (40, 512) and torch.equal(got, expected), name
        rows = gguf_weights.tensor_to_torch(file, file.tensors[name], torch.float32, rows=slice(5, 7))
        assert torch.equal(rows, expected[5:7]), name
    assert torch.allclose(gguf_weights.tensor_to_torch(file, file.tensors["Q8_0"], torch.float32),
                          torch.from_numpy(values), atol=0.05)


def _half(value: float) -> list[int]:
    return list(np.array([value], np.float16).view(np.uint8))


@pytest.mark.parametrize(
    "qtype, block, expected",
    [
        # Q4_K: d=1, dmin=0.5, every 6-bit scale and min 1, nibbles 1 (low) and 2 (high)
        (Q.Q4_K, _half(1) + _half(0.5) + [1] * 8 + [0x11] * 4 + [0x21] * 128, [0.5] * 32 + [1.5] * 32),
        # Q5_K: d=1, dmin=0, scales 1, mins 0, every high bit set: q = 16 + nibble
        (Q.Q5_K, _half(1) + _half(0) + [1] * 4 + [0] * 4 + [0x01] * 4 + [0xFF] * 32 + [0x21] * 128,
         [17.0] * 32 + [18.0] * 32),
        # Q6_K: 6-bit q = nibble - 32 (high bits 0), int8 scales 2, d=0.5
        (Q.Q6_K, [0x21] * 128 + [0] * 64 + [2] * 16 + _half(0.5), [-31.0] * 64 + [-30.0] * 64),
    ],
    ids=["Q4_K", "Q5_K", "Q6_K"],
)
def test_k_quant_blocks_decode_to_the_ggml_layout(tmp_path, qtype, block, expected):
    data = np.array([block], dtype=np.uint8)
    assert data.shape[1] == gguf.GGML_QUANT_SIZES[qtype][1]
    file = _write(tmp_path / "k.gguf", {"t": (data, qtype)})
    got = gguf_weights.tensor_to_torch(file, file.tensors["t"], torch.float32)
    pattern = torch.tensor(expected * (256 // len(expected)))
    assert torch.equal(got, pattern.reshape(1, 256))


# ---------------------------------------------------------------- hub names


def test_hub_gguf_name_picks_the_file_of_that_quantization(tmp_path, hubs):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Model-f16.gguf", "Model-Q8_0.gguf", "Model-Q4_K_M.gguf", "README.md"):
        (repo / name).write_bytes(b"GGUF")
    hubs.publish("huggingface", "owner/Model-GGUF", repo)
    assert resolve.resolve_model("owner/Model-GGUF:F16").path.name == "Model-f16.gguf"
    assert resolve.resolve_model("owner/Model-GGUF:Q8_0").path.name == "Model-Q8_0.gguf"
    patterns = hubs.downloads[-1][2]["allow_patterns"]
    assert "*Q8_0.gguf" in patterns and "*q8_0.gguf" in patterns
    with pytest.raises(ModelNotFoundError, match="has 0 GGUF files for Q5_K_M"):
        resolve.resolve_model("owner/Model-GGUF:Q5_K_M")


def test_unreachable_gguf_repo_says_how_to_pass_the_file():
    with pytest.raises(ModelNotFoundError, match=r"the Q8_0 GGUF file of 'q3embed-tests/no-such-GGUF'.*--include"):
        Embedder("q3embed-tests/no-such-GGUF:Q8_0", device="cpu")
