"""embed-corpus in one process: formats, shard layout, resume, the manifest check and input errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import q3embed.pipeline.corpus as corpus_mod
from q3embed import Embedder
from q3embed.cli import main
from q3embed.errors import ConfigurationError, ConflictError, InputError
from q3embed.engine import ModelOptions
from q3embed.pipeline.corpus import CorpusJob, embed_corpus
from q3embed.pipeline.corpus_read import CorpusFields
from q3embed.pipeline.corpus_write import read_output

ROWS = [{"_id": f"doc-{i}", "title": f"Title {i}" if i % 3 else "",
         "text": f"Text number {i}, with a comma" + ("\nand a second line" if i % 4 == 0 else "") + " word" * (i % 7)}
        for i in range(19)]
SHARD = 4


@pytest.fixture(autouse=True)
def no_q3embed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("Q3EMBED_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def reuse_the_tiny_model(monkeypatch: pytest.MonkeyPatch, embedder: Embedder, tiny_embedding_dir: Path) -> None:
    """Loading the Qwen3 tokenizer costs ~1 s; the job's own loader still runs for any other model."""
    real = corpus_mod.load_embedder

    def load(settings: ModelOptions) -> Embedder:
        same = (settings.model, settings.dtype, settings.device) == (str(tiny_embedding_dir), "float32", "cpu")
        return embedder if same and settings.max_length is None else real(settings)

    monkeypatch.setattr(corpus_mod, "load_embedder", load)


@pytest.fixture
def settings(tiny_embedding_dir: Path) -> ModelOptions:
    return ModelOptions(model=str(tiny_embedding_dir), dtype="float32", device="cpu")


@pytest.fixture
def model_flags(tiny_embedding_dir: Path) -> list[str]:
    return ["--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu", "--no-progress"]


def write_jsonl(path: Path, rows: list[dict], blank_after: int | None = 2) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps(row) + "\n")
            if i == blank_after:
                handle.write("\n")  # blank lines are not rows
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 3) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)  # groups cut across shards
    return path


def vectors(table: pa.Table) -> np.ndarray:
    return np.stack(table["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)  # [n, d]


def expected_texts(rows: list[dict], title: bool = True) -> list[str]:
    return [f"{r['title']} {r['text']}" if title and r["title"] else r["text"] for r in rows]


def assert_same_vectors(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


# ---------------------------------------------------------------- output


def test_cli_writes_shards_equal_to_the_embedder(capsys, tmp_path, model_flags, embedder):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    code, report, err = run(capsys, "embed-corpus", source, "--output", tmp_path / "out", "--shard-size", SHARD,
                            "--batch-rows", 3, "--title-field", "title", *model_flags)
    assert code == 0, err
    assert report["rows"] == 19 and report["shards"] == 5 and report["written"] == 5 and report["skipped"] == 0
    assert "rows/s" in err and "tokens/s" in err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["manifest.json"] + [f"part-{k:05d}.parquet" for k in range(5)]
    first = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert first.schema.field("vector").type == pa.list_(pa.float32(), embedder.dimensions)
    assert str(first.schema.field("dimensions").type) == "int32" and str(first.schema.field("tokens").type) == "int32"
    table = read_output(tmp_path / "out")
    texts = expected_texts(ROWS)
    assert table["id"].to_pylist() == [r["_id"] for r in ROWS]  # auto id field: _id, rows in input order
    assert table["tokens"].to_pylist() == [len(t) for t in embedder.tokenize(texts)]
    assert set(table["model"].to_pylist()) == {embedder.info.name}
    assert set(table["dimensions"].to_pylist()) == {embedder.dimensions}
    assert report["tokens"] == sum(table["tokens"].to_pylist())
    assert_same_vectors(vectors(table), embedder.encode(texts))


def test_output_does_not_depend_on_batch_size(tmp_path, settings):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    tables = []
    for batch_rows in (1, 7, 1000):
        output = tmp_path / f"out-{batch_rows}"
        embed_corpus(CorpusJob(source, output, settings, shard_size=SHARD, batch_rows=batch_rows))
        tables.append(read_output(output))
    for table in tables[1:]:
        assert table["id"].to_pylist() == tables[0]["id"].to_pylist()
        assert table["tokens"].to_pylist() == tables[0]["tokens"].to_pylist()
        assert_same_vectors(vectors(table), vectors(tables[0]))


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_csv_tsv_and_parquet_give_the_jsonl_output(tmp_path, settings, kind):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    other = {"csv": lambda p: write_csv(p, ROWS), "tsv": lambda p: write_csv(p, ROWS, "\t"),
             "parquet": lambda p: write_parquet(p, ROWS)}[kind](tmp_path / f"corpus.{kind}")
    fields = CorpusFields(title_field="title")
    embed_corpus(CorpusJob(source, tmp_path / "a", settings, fields, shard_size=SHARD))
    report = embed_corpus(CorpusJob(other, tmp_path / "b", settings, fields, shard_size=SHARD))
    assert report.rows == 19 and report.written == 5
    a, b = read_output(tmp_path / "a"), read_output(tmp_path / "b")
    assert b["id"].to_pylist() == a["id"].to_pylist() and b["tokens"].to_pylist() == a["tokens"].to_pylist()
    assert_same_vectors(vectors(b), vectors(a))


def test_row_numbers_as_ids_queries_and_dimensions(tmp_path, settings, embedder):
    rows = [{"body": r["text"]} for r in ROWS[:6]]
    source = write_parquet(tmp_path / "q.parquet", rows)
    job = CorpusJob(source, tmp_path / "out", settings, CorpusFields(text_field="body"), query=True, dimensions=32,
                    shard_size=SHARD)
    embed_corpus(job)
    table = read_output(tmp_path / "out")
    assert table["id"].to_pylist() == [str(i) for i in range(6)]
    assert set(table["dimensions"].to_pylist()) == {32}
    assert_same_vectors(vectors(table), embedder.encode([r["body"] for r in rows], query=True, dimensions=32))


def test_empty_texts_are_left_out_and_counted(tmp_path, settings):
    rows = [*ROWS[:5], {"_id": "blank", "title": "", "text": "   "}, *ROWS[5:8]]
    report = embed_corpus(CorpusJob(write_jsonl(tmp_path / "c.jsonl", rows), tmp_path / "out", settings,
                                    shard_size=SHARD))
    assert (report.rows, report.embedded, report.empty) == (9, 8, 1)
    assert "blank" not in read_output(tmp_path / "out")["id"].to_pylist()


# ---------------------------------------------------------------- resume


def test_an_interrupted_job_resumes_where_it_stopped(tmp_path, settings):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    job = CorpusJob(source, tmp_path / "out", settings, shard_size=SHARD, batch_rows=2)
    seen = [0]

    def interrupt(rows: int, tokens: int) -> None:
        seen[0] += rows
        if seen[0] >= 2 * SHARD + 2:  # in the middle of the third shard
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(job, progress=interrupt)
    finished = sorted(p.name for p in (tmp_path / "out").glob("part-*.parquet"))
    assert finished == ["part-00000.parquet", "part-00001.parquet"]
    before = {name: (tmp_path / "out" / name).stat().st_mtime_ns for name in finished}
    report = embed_corpus(job)
    assert (report.skipped, report.written, report.embedded) == (2, 3, 19 - 2 * SHARD)
    assert {name: (tmp_path / "out" / name).stat().st_mtime_ns for name in finished} == before  # not rewritten
    embed_corpus(CorpusJob(source, tmp_path / "whole", settings, shard_size=SHARD))
    resumed, whole = read_output(tmp_path / "out"), read_output(tmp_path / "whole")
    assert resumed["id"].to_pylist() == whole["id"].to_pylist()
    assert_same_vectors(vectors(resumed), vectors(whole))


def test_a_deleted_shard_is_written_again_and_a_finished_job_skips_all(capsys, tmp_path, model_flags):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    argv = ["embed-corpus", source, "--output", tmp_path / "out", "--shard-size", SHARD, *model_flags]
    assert run(capsys, *argv)[0] == 0
    (tmp_path / "out" / "part-00003.parquet").unlink()
    code, report, _ = run(capsys, *argv)
    assert code == 0 and (report["written"], report["skipped"], report["embedded"]) == (1, 4, SHARD)
    code, report, _ = run(capsys, *argv)
    assert code == 0 and (report["written"], report["skipped"], report["embedded"]) == (0, 5, 0)


def test_another_job_in_the_same_output_is_refused_until_overwrite(capsys, tmp_path, model_flags):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    argv = ["embed-corpus", source, "--output", tmp_path / "out", "--shard-size", SHARD, *model_flags]
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, *argv, "--dimensions", "32")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "dimensions None -> 32" in err and "--overwrite" in err
    write_jsonl(source, ROWS[:10])  # the input changed: its size and time no longer match
    code, _, err = run(capsys, *argv)
    assert code == 2 and "input_bytes" in err
    code, report, _ = run(capsys, *argv, "--dimensions", "32", "--overwrite")
    assert code == 0 and report["written"] == 3 and len(list((tmp_path / "out").glob("part-*"))) == 3


def test_resume_with_another_model_under_auto_is_refused(tmp_path, settings):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    job = CorpusJob(source, tmp_path / "out", settings, shard_size=SHARD)
    embed_corpus(job)
    (tmp_path / "out" / "part-00001.parquet").unlink()
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    pq.write_table(table.set_column(2, "model", pa.array(["someone/else"] * table.num_rows)),
                   tmp_path / "out" / "part-00000.parquet")
    with pytest.raises(ConflictError, match="someone/else"):
        embed_corpus(job)


# ---------------------------------------------------------------- errors


def _bad_inputs(tmp: Path) -> dict[str, tuple[list, str]]:
    no_text = write_jsonl(tmp / "no-text.jsonl", [{"_id": "a", "body": "x"}])
    later = write_jsonl(tmp / "later.jsonl", [*ROWS[:3], {"_id": "x", "text": 5}], blank_after=0)
    bad_json = tmp / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    no_column = write_csv(tmp / "c.csv", [{"id": "1", "body": "x"}])
    bad_id = write_jsonl(tmp / "bad-id.jsonl", [{"id": 1.5, "text": "x"}])
    empty = tmp / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    (tmp / "x.txt").write_text("hello", encoding="utf-8")
    return {
        "missing text field": ([no_text], "no text field 'text' (fields: _id, body)"),
        "text not a string on a later line": ([later], "later.jsonl:5: the text field 'text' is a int"),
        "bad json": ([bad_json], "bad.jsonl:2: not valid JSON"),
        "csv without the column": ([no_column, "--text-field", "text"], "no text field 'text' (fields: id, body)"),
        "bad id": ([bad_id], "bad-id.jsonl:1: the id field 'id' must be"),
        "no rows": ([empty], "holds no texts"),
        "unsupported suffix": ([tmp / "x.txt"], "must be a .jsonl"),
        "missing file": ([tmp / "nope.jsonl"], "no such input file"),
        "no output": ([no_text, "NO-OUTPUT"], "pass --output DIR"),
        "workers without ray": ([no_text, "--workers", "2"], "--workers applies to --ray runs only"),
    }


@pytest.mark.parametrize("case", ["missing text field", "text not a string on a later line", "bad json",
                                  "csv without the column", "bad id", "no rows", "unsupported suffix",
                                  "missing file", "no output", "workers without ray"])
def test_bad_inputs_are_one_line_errors_before_any_output(capsys, tmp_path, model_flags, case):
    argv, message = _bad_inputs(tmp_path)[case]
    output = [] if "NO-OUTPUT" in argv else ["--output", tmp_path / "out"]
    code, report, err = run(capsys, "embed-corpus", *(a for a in argv if a != "NO-OUTPUT"), *output, *model_flags)
    assert code == 2 and report is None
    assert err.startswith("q3embed: error: ") and len(err.strip().splitlines()) == 1
    assert message in err
    assert not list(tmp_path.glob("out/part-*"))


def test_output_env_twin_is_its_own(capsys, tmp_path, model_flags, monkeypatch):
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS[:3])
    monkeypatch.setenv("Q3EMBED_OUTPUT", str(tmp_path / "vectors.npy"))  # embed's output file: not used here
    monkeypatch.setenv("Q3EMBED_CORPUS_OUTPUT", str(tmp_path / "env-out"))
    code, report, _ = run(capsys, "embed-corpus", source, *model_flags)
    assert code == 0 and report["output"] == str(tmp_path / "env-out")
    assert not (tmp_path / "vectors.npy").exists()


def test_ray_flag_without_ray_installed_says_how_to_install(monkeypatch):
    from q3embed.distributed import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees where the extra is not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'q3embed\[ray\]'"):
        require_ray()


def test_the_base_install_never_imports_ray():
    probe = ("import sys, q3embed, q3embed.cli, q3embed.pipeline.corpus, q3embed.cli.corpus_command, q3embed.distributed; "
             "q3embed.cli.build_parser(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_input_error_for_bad_fields_via_api(tmp_path, settings):
    source = write_csv(tmp_path / "c.csv", [{"id": "1", "text": "x"}])
    with pytest.raises(InputError, match="no field 'name'"):
        embed_corpus(CorpusJob(source, tmp_path / "out", settings, CorpusFields(title_field="name")))
