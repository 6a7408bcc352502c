"""`q3embed index`, `search` and `collections`, run in-process on the tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import q3embed.engine
from q3embed import Embedder, Reranker
from q3embed.cli import main


@pytest.fixture(autouse=True)
def clean_env_and_shared_models(monkeypatch, embedder, reranker, tiny_embedding_dir, tiny_reranker_dir):
    """No Q3EMBED_* from the shell; the tiny models load once (the CLI still names them by path)."""
    for name in list(os.environ):
        if name.startswith("Q3EMBED_"):
            monkeypatch.delenv(name)
    models = {str(tiny_embedding_dir): embedder}
    monkeypatch.setattr(q3embed.engine, "Embedder", lambda options: models.get(options.model) or Embedder(options))
    monkeypatch.setattr(q3embed.engine, "Reranker",
                        lambda options: reranker if options.model == str(tiny_reranker_dir) else Reranker(options))


@pytest.fixture
def docs(tmp_path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "beijing.txt").write_text("The capital of China is Beijing.", encoding="utf-8")
    (root / "sub" / "gravity.md").write_text("# Gravity\n\nGravity is a force that attracts mass.", encoding="utf-8")
    (root / "cats.html").write_text("<p>Cats purr when content.</p>", encoding="utf-8")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def model(tiny_embedding_dir) -> list[str]:
    return ["--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu"]


@pytest.mark.parametrize("where", ["embedded", "milvus"])
def test_index_then_search_then_manage(capsys, tmp_path, docs, model, where):
    store = ["--store-dir", str(tmp_path / "store")] if where == "embedded" else \
        ["--milvus-uri", str(tmp_path / "milvus.db")]
    code, out, err = run(capsys, "index", str(docs), "-c", "notes", "--chunk-size", "16", "--no-progress",
                         *store, *model)
    assert code == 0, err
    (report,) = rows(out)
    assert (report["collection"], report["documents"], report["added"]) == ("notes", 3, 3)
    assert report["skipped"] == [{"source": str(docs / "blob.txt"), "reason": "binary file"}]
    assert f"skipped {docs / 'blob.txt'}: binary file" in err
    assert "indexed 3 documents into 'notes' (3 new, 0 updated, 0 unchanged)" in err and "chunks" in err

    code, out, _ = run(capsys, "index", str(docs), "-c", "notes", "--no-progress", *store, *model)
    assert code == 0 and rows(out)[0]["unchanged"] == 3

    code, out, err = run(capsys, "search", "What is the capital of China?", "-c", "notes", "--top-k", "2", *store)
    assert code == 0, err  # --model auto: the model the collection was built with
    hits = rows(out)
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["rerank_score"] is None
    assert set(hits[0]) >= {"document_id", "chunk_index", "start", "end", "score", "vector_score", "text", "metadata"}

    code, out, _ = run(capsys, "search", "capital", "-c", "notes", "--filter", '{"format": "markdown"}', *store)
    assert [h["document_id"] for h in rows(out)] == ["sub/gravity.md"]

    code, out, _ = run(capsys, "collections", "list", *store)
    (listed,) = rows(out)
    assert (listed["name"], listed["documents"], listed["store"], listed["chunk_size"]) == ("notes", 3, where, 16)
    code, out, _ = run(capsys, "collections", "delete", "notes", "--id", "cats.html", "--id", "ghost", *store)
    assert rows(out) == [{"collection": "notes", "deleted": ["cats.html"], "missing": ["ghost"]}]
    code, out, _ = run(capsys, "collections", "describe", "notes", *store)
    assert rows(out)[0]["documents"] == 2
    code, _, err = run(capsys, "collections", "drop", "notes", *store)
    assert code == 0 and "dropped collection 'notes'" in err
    code, _, err = run(capsys, "collections", "describe", "notes", *store)
    assert code == 2 and "does not exist" in err


def test_search_with_rerank(capsys, tmp_path, docs, model, tiny_reranker_dir):
    store = ["--store-dir", str(tmp_path / "store")]
    assert run(capsys, "index", str(docs), "-c", "notes", "--no-progress", *store, *model)[0] == 0
    code, out, err = run(capsys, "search", "capital of China", "-c", "notes", "--rerank", "--top-k", "2",
                         "--reranker", str(tiny_reranker_dir), *store, *model)
    assert code == 0, err
    hits = rows(out)
    assert len(hits) == 2 and all(h["rerank_score"] is not None and h["score"] == h["rerank_score"] for h in hits)
    assert hits[0]["rerank_score"] >= hits[1]["rerank_score"]


def test_environment_twins(capsys, tmp_path, docs, model, monkeypatch):
    monkeypatch.setenv("Q3EMBED_STORE_DIR", str(tmp_path / "envstore"))
    monkeypatch.setenv("Q3EMBED_COLLECTION", "envcol")
    monkeypatch.setenv("Q3EMBED_NO_PROGRESS", "1")
    assert run(capsys, "index", str(docs), *model)[0] == 0
    assert (tmp_path / "envstore" / "envcol").is_dir()
    monkeypatch.setenv("Q3EMBED_ID", "cats.html,beijing.txt")
    code, out, _ = run(capsys, "collections", "delete", "envcol")
    assert code == 0 and rows(out)[0]["deleted"] == ["cats.html", "beijing.txt"]


@pytest.mark.parametrize("argv,message", [
    (["index", "DOCS", "-c", "../up"], "invalid collection name"),
    (["index", "DOCS"], "pass --collection NAME"),
    (["search", "q", "-c", "nothing"], "does not exist"),
    (["collections", "describe"], "needs the collection NAME"),
    (["collections", "delete", "x"], "needs at least one --id"),
    (["collections", "list", "--id", "a"], "--id applies to 'collections delete' only"),
    (["index", "DOCS", "-c", "x", "--chunk-size", "4"], "chunk size"),
    (["index", "DOCS", "-c", "x", "--milvus-uri", "not-a-db-file"], "ending in .db"),
    (["index", "DOCS", "nowhere/", "-c", "x"], "no such file or folder: nowhere"),
])
def test_mistakes_are_one_line_errors(capsys, tmp_path, docs, model, argv, message):
    argv = [str(docs) if a == "DOCS" else a for a in argv]
    code, out, err = run(capsys, *argv, "--store-dir", str(tmp_path / "store"),
                         *(model if argv[0] == "index" else []))
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_a_bad_filter_is_an_error_line(capsys, tmp_path, docs, model):
    store = ["--store-dir", str(tmp_path / "store")]
    assert run(capsys, "index", str(docs), "-c", "notes", "--no-progress", *store, *model)[0] == 0
    code, _, err = run(capsys, "search", "q", "-c", "notes", "--filter", '{"a": {"$regex": "x"}}', *store)
    assert code == 2 and "unknown filter operator" in err
