"""The q3embed command line, run in-process on tiny random checkpoints (offline, CPU, float32)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import q3embed.cli as cli
import q3embed.engine
from q3embed import Embedder, Reranker, similarity
from q3embed.cli import main

TEXTS = ["The capital of China is Beijing.", "Gravity is a force that attracts mass.", "Cats purr."]
QUERY = "What is the capital of China?"


@pytest.fixture(autouse=True)
def no_q3embed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without Q3EMBED_* variables, whatever the shell had."""
    for name in list(os.environ):
        if name.startswith("Q3EMBED_"):
            monkeypatch.delenv(name)


_LOADED: dict[tuple, Embedder | Reranker] = {}


def _load(cls: type, model: str, **kwargs) -> Embedder | Reranker:
    """One real load per (class, model, options): loading the Qwen3 tokenizer costs ~0.6 s each time."""
    key = (cls, model, *sorted((k, str(v)) for k, v in kwargs.items()))
    if key not in _LOADED:
        _LOADED[key] = cls(model, **kwargs)
    return _LOADED[key]


@pytest.fixture(autouse=True)
def reuse_loaded_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI still builds its models from the flags it parsed; equal requests share one instance."""
    monkeypatch.setattr(q3embed.engine, "Embedder", lambda model, **kwargs: _load(Embedder, model, **kwargs))
    monkeypatch.setattr(q3embed.engine, "Reranker", lambda model, **kwargs: _load(Reranker, model, **kwargs))


@pytest.fixture
def emb(tiny_embedding_dir: Path) -> list[str]:
    """Model flags for the embedding commands."""
    return ["--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu"]


@pytest.fixture
def rr(tiny_reranker_dir: Path) -> list[str]:
    return ["--model", str(tiny_reranker_dir), "--dtype", "float32", "--device", "cpu"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]


def stdout_vectors(out: str) -> np.ndarray:
    rows = lines(out)
    assert [row["index"] for row in rows] == list(range(len(rows)))
    return np.array([row["embedding"] for row in rows], dtype=np.float32)


# ---------------------------------------------------------------- embed


def test_embed_arguments_to_stdout_equal_the_engine(capsys, emb, embedder):
    code, out, err = run(capsys, "embed", *TEXTS, *emb)
    assert code == 0 and err == ""
    vectors = stdout_vectors(out)
    assert vectors.shape == (3, 64)
    np.testing.assert_allclose(vectors, embedder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_reads_txt_skipping_blank_lines(capsys, emb, embedder, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"{TEXTS[0]}\n\n   \n{TEXTS[1]}\r\n{TEXTS[2]}", encoding="utf-8")
    code, out, _ = run(capsys, "embed", "--input", str(source), *emb)
    assert code == 0
    np.testing.assert_allclose(stdout_vectors(out), embedder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_reads_jsonl_strings_and_objects(capsys, emb, embedder, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(f'{json.dumps(TEXTS[0])}\n\n{{"text": {json.dumps(TEXTS[1])}, "id": 7}}\n'
                      f'{json.dumps({"text": TEXTS[2]})}\n', encoding="utf-8")
    code, out, _ = run(capsys, "embed", "--input", str(source), *emb)
    assert code == 0
    np.testing.assert_allclose(stdout_vectors(out), embedder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_reads_csv_and_parquet_text_columns(capsys, emb, embedder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_file = tmp_path / "in.csv"
    csv_file.write_text("id,text\n" + "".join(f"{i},{json.dumps(t)}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    parquet_file = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": TEXTS}), parquet_file)
    for source in (csv_file, parquet_file):
        code, out, err = run(capsys, "embed", "--input", str(source), *emb)
        assert code == 0, err
        np.testing.assert_allclose(stdout_vectors(out), embedder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_writes_npy(capsys, emb, embedder, tmp_path):
    target = tmp_path / "out.npy"
    code, out, _ = run(capsys, "embed", *TEXTS, "--output", str(target), *emb)
    assert code == 0 and out == ""
    array = np.load(target)
    assert array.dtype == np.float32 and array.shape == (3, 64)
    np.testing.assert_allclose(array, embedder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_writes_jsonl(capsys, emb, embedder, tmp_path):
    target = tmp_path / "out.jsonl"
    code, out, _ = run(capsys, "embed", *TEXTS, "--output", str(target), *emb)
    assert code == 0 and out == ""
    vectors = stdout_vectors(target.read_text(encoding="utf-8"))
    np.testing.assert_allclose(vectors, embedder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_query_and_instruction(capsys, emb, embedder):
    _, out, _ = run(capsys, "embed", "--query", QUERY, *emb)
    as_query = stdout_vectors(out)
    np.testing.assert_allclose(as_query, embedder.encode([QUERY], query=True), rtol=0, atol=1e-6)
    assert not np.allclose(as_query, embedder.encode([QUERY]), atol=1e-3)
    _, out, _ = run(capsys, "embed", "--instruction", "Find the matching code", QUERY, *emb)  # implies --query
    expected = embedder.encode([QUERY], query=True, instruction="Find the matching code")
    np.testing.assert_allclose(stdout_vectors(out), expected, rtol=0, atol=1e-6)


def test_embed_dimensions_and_no_normalize(capsys, emb, embedder):
    _, out, _ = run(capsys, "embed", "--dimensions", "32", *TEXTS, *emb)
    vectors = stdout_vectors(out)
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, embedder.encode(TEXTS, dimensions=32), rtol=0, atol=1e-6)
    _, out, _ = run(capsys, "embed", "--no-normalize", *TEXTS, *emb)
    np.testing.assert_allclose(stdout_vectors(out), embedder.encode(TEXTS, normalize=False), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- rerank


def test_rerank_arguments_best_first(capsys, rr, reranker):
    code, out, err = run(capsys, "rerank", QUERY, *TEXTS, *rr)
    assert code == 0 and err == ""
    rows = lines(out)
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert sorted(row["index"] for row in rows) == [0, 1, 2]
    assert all(row["document"] == TEXTS[row["index"]] and "query" not in row for row in rows)
    expected = reranker.rerank(QUERY, TEXTS)
    assert [row["index"] for row in rows] == [r.index for r in expected]
    np.testing.assert_allclose(scores, [r.score for r in expected], atol=1e-6)


def test_rerank_input_file_with_top_n(capsys, rr, reranker, tmp_path):
    source = tmp_path / "requests.jsonl"
    requests = [{"query": QUERY, "documents": TEXTS}, {"query": "Do cats purr?", "documents": TEXTS[::-1]}]
    source.write_text("\n".join(json.dumps(r) for r in requests) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "rerank", "--input", str(source), "--top-n", "2", *rr)
    assert code == 0
    rows = lines(out)
    assert [row["query"] for row in rows] == [QUERY, QUERY, "Do cats purr?", "Do cats purr?"]
    for request, pair in zip(requests, (rows[:2], rows[2:]), strict=True):
        best = reranker.rerank(request["query"], request["documents"], top_n=2)
        assert [row["index"] for row in pair] == [r.index for r in best]
        assert pair[0]["score"] >= pair[1]["score"]
        assert all(row["document"] == request["documents"][row["index"]] for row in pair)


# ---------------------------------------------------------------- similarity and info


def test_similarity_first_against_others(capsys, emb, embedder):
    code, out, _ = run(capsys, "similarity", QUERY, *TEXTS, *emb)
    assert code == 0
    rows = lines(out)
    assert [row["index"] for row in rows] == [1, 2, 3] and [row["text"] for row in rows] == TEXTS
    expected = similarity(embedder.encode([QUERY]), embedder.encode(TEXTS))[0]
    np.testing.assert_allclose([row["similarity"] for row in rows], expected, atol=1e-5)
    _, out, _ = run(capsys, "similarity", "--query", QUERY, *TEXTS, *emb)
    expected = similarity(embedder.encode([QUERY], query=True), embedder.encode(TEXTS))[0]
    np.testing.assert_allclose([row["similarity"] for row in lines(out)], expected, atol=1e-5)


def test_similarity_matrix(capsys, emb):
    code, out, _ = run(capsys, "similarity", "--matrix", QUERY, *TEXTS, *emb)
    assert code == 0
    matrix = np.array(lines(out))
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)


def test_info_reports_models_and_environment(capsys, emb, tiny_embedding_dir, tiny_reranker_dir):
    code, out, _ = run(capsys, "info", *emb, "--reranker", str(tiny_reranker_dir))
    assert code == 0
    report = json.loads(out)
    assert report["q3embed_version"] == cli.__version__
    assert isinstance(report["torch_version"], str) and isinstance(report["cpu_has_fast_bf16"], bool)
    model = report["model"]
    assert model["path"] == str(tiny_embedding_dir.resolve()) and model["name"] == str(tiny_embedding_dir)
    assert (model["kind"], model["dimensions"], model["dtype"], model["device"]) == ("qwen3", 64, "float32", "cpu")
    assert model["max_length"] == 8192
    assert report["reranker"]["kind"] == "qwen3-reranker"
    assert report["reranker"]["path"] == str(tiny_reranker_dir.resolve())


# ---------------------------------------------------------------- environment twins


def test_env_dimensions_and_flag_beats_env(capsys, emb, monkeypatch):
    monkeypatch.setenv("Q3EMBED_DIMENSIONS", "32")
    _, out, _ = run(capsys, "embed", "hello", *emb)
    assert stdout_vectors(out).shape == (1, 32)
    _, out, _ = run(capsys, "embed", "hello", "--dimensions", "48", *emb)
    assert stdout_vectors(out).shape == (1, 48)


def test_env_dtype_and_flag_beats_env(capsys, tiny_embedding_dir, monkeypatch):
    monkeypatch.setenv("Q3EMBED_DTYPE", "float32")
    monkeypatch.setenv("Q3EMBED_MODEL", str(tiny_embedding_dir))
    monkeypatch.setenv("Q3EMBED_DEVICE", "cpu")
    _, out, _ = run(capsys, "info")
    assert json.loads(out)["model"]["dtype"] == "float32"
    monkeypatch.setenv("Q3EMBED_DTYPE", "bfloat16")
    _, out, _ = run(capsys, "info", "--dtype", "float32")
    assert json.loads(out)["model"]["dtype"] == "float32"


@pytest.mark.parametrize("value, as_query", [("1", True), ("YES", True), ("on", True), ("0", False), ("False", False)])
def test_env_query_boolean(capsys, emb, embedder, monkeypatch, value, as_query):
    monkeypatch.setenv("Q3EMBED_QUERY", value)
    _, out, _ = run(capsys, "embed", QUERY, *emb)
    np.testing.assert_allclose(stdout_vectors(out), embedder.encode([QUERY], query=as_query), rtol=0, atol=1e-6)


def test_bad_env_values_are_one_line_errors(capsys, emb, monkeypatch):
    monkeypatch.setenv("Q3EMBED_QUERY", "maybe")
    code, out, err = run(capsys, "embed", "hello", *emb)
    assert code == 2 and out == ""
    assert err.startswith("q3embed: error: Q3EMBED_QUERY='maybe' is not a boolean") and err.count("\n") == 1
    monkeypatch.delenv("Q3EMBED_QUERY")
    monkeypatch.setenv("Q3EMBED_DTYPE", "int8")
    code, _, err = run(capsys, "embed", "--query", "hello", *emb)
    assert code == 2 and "Q3EMBED_DTYPE" in err
    assert run(capsys, "embed", "--help")[0] == 0  # help still works with a broken variable


def test_env_of_another_command_is_ignored(capsys, emb, monkeypatch):
    monkeypatch.setenv("Q3EMBED_TOP_N", "not-a-number")
    code, out, _ = run(capsys, "embed", "hello", *emb)
    assert code == 0 and stdout_vectors(out).shape == (1, 64)


def test_rerank_model_env_twin_is_q3embed_reranker(capsys, tiny_reranker_dir, tiny_embedding_dir, monkeypatch):
    monkeypatch.setenv("Q3EMBED_MODEL", str(tiny_embedding_dir))  # the embedder's, must not leak into rerank
    monkeypatch.setenv("Q3EMBED_RERANKER", str(tiny_reranker_dir))
    code, out, _ = run(capsys, "rerank", QUERY, *TEXTS, "--dtype", "float32", "--device", "cpu")
    assert code == 0 and len(lines(out)) == 3


def test_every_flag_shows_its_env_twin(capsys):
    for command in ("embed", "rerank", "similarity", "info"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "examples:" in out
        for action in cli.options(cli._subcommands(cli.build_parser())[command]):
            assert f"[env: {action.env_var}]" in " ".join(out.split())


# ---------------------------------------------------------------- errors


def _error_cases(tmp: Path) -> dict[str, list[str]]:
    bad_json = tmp / "bad.jsonl"
    bad_json.write_text('"fine"\n{"text": oops}\n', encoding="utf-8")
    return {
        "missing model dir": ["embed", "hello", "--model", str(tmp / "no-such-model")],
        "empty text": ["embed", ""],
        "dimensions 8": ["embed", "hello", "--dimensions", "8"],
        "missing input file": ["embed", "--input", str(tmp / "missing.txt")],
        "bad json line": ["embed", "--input", str(bad_json)],
        "texts and input": ["embed", "hello", "--input", str(bad_json)],
        "no texts": ["embed"],
        "bad output suffix": ["embed", "hello", "--output", str(tmp / "out.csv")],
        "query without documents": ["rerank", QUERY],
        "rerank bad input line": ["rerank", "--input", str(bad_json)],
        "usage error": ["embed", "hello", "--top-n", "3"],
        "non-positive integer": ["embed", "hello", "--max-length", "0"],
    }


ERROR_CASES = ["missing model dir", "empty text", "dimensions 8", "missing input file", "bad json line",
               "texts and input", "no texts", "bad output suffix", "query without documents",
               "rerank bad input line", "usage error", "non-positive integer"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_exit_2_with_one_line(capsys, emb, tmp_path, case):
    cases = _error_cases(tmp_path)
    assert sorted(cases) == sorted(ERROR_CASES)
    argv = cases[case]
    flags = emb if "--model" not in argv else ["--dtype", "float32"]
    code, out, err = run(capsys, *argv, *flags)
    assert code == 2 and out == "" and "Traceback" not in err
    if case not in ("usage error", "non-positive integer"):  # argparse prints its usage line first
        assert err.startswith("q3embed: error: ") and err.count("\n") == 1, err
    if case == "bad json line":
        assert "bad.jsonl:2:" in err


# ---------------------------------------------------------------- logging and the real script


def test_engine_warnings_go_to_stderr_unless_quiet(capsys, emb, monkeypatch):
    def warn_then_embed(*args, **kwargs):
        logging.getLogger("q3embed").warning("model auto -> %s", "somewhere")
        return _load(Embedder, *args, **kwargs)

    monkeypatch.setattr(q3embed.engine, "Embedder", warn_then_embed)
    code, out, err = run(capsys, "embed", "hello", *emb)
    assert code == 0 and err == "q3embed: model auto -> somewhere\n" and len(lines(out)) == 1
    code, out, err = run(capsys, "--quiet", "embed", "hello", *emb)
    assert code == 0 and err == "" and len(lines(out)) == 1


def test_python_dash_m_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "q3embed", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for word in ("embed", "rerank", "similarity", "info", "Q3EMBED_QUIET"):
        assert word in done.stdout
