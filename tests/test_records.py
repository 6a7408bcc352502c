"""pipeline.records: the one reader of JSONL, CSV/TSV and Parquet files, strict and lenient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from q3embed.errors import InputError
from q3embed.pipeline.records import RECORD_FORMATS, Record, Skipped, read_records, record_format, record_id


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_one_suffix_table_names_every_format(tmp_path):
    assert set(RECORD_FORMATS.values()) == {"jsonl", "csv", "tsv", "parquet"}
    (tmp_path / "x.txt").write_text("a", encoding="utf-8")
    with pytest.raises(InputError, match=r"must be a \.jsonl, \.ndjson, \.csv, \.tsv, \.parquet or \.pq file"):
        record_format(tmp_path / "x.txt")
    with pytest.raises(InputError, match="no such input file"):
        record_format(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(("value", "ok"), [("a", "a"), (7, "7"), ("", None), (True, None), (1.5, None), (None, None)])
def test_one_id_rule(value, ok):
    if ok is not None:
        assert record_id(value, "f.jsonl:3", "id") == ok
    else:
        with pytest.raises(InputError, match=r"^f\.jsonl:3: the id field 'id' must be a non-empty string or an int"):
            record_id(value, "f.jsonl:3", "id")


def test_strict_stops_at_the_first_bad_line_lenient_goes_on(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", ['{"a": 1}', "", "{oops", '"a string"'])
    with pytest.raises(InputError, match=r"r\.jsonl:3: not valid JSON"):
        list(read_records(path))
    items = list(read_records(path, strict=False))
    assert [type(i) for i in items] == [Record, Skipped, Record]
    assert items[1].source == f"{path}:3" and items[1].reason.startswith("not valid JSON")
    assert [r.row for r in items if isinstance(r, Record)] == [0, 1]  # a bad line is not a record
    assert items[2].data == "a string" and items[2].default_id == "r.jsonl:4"


def test_a_file_that_stops_decoding_is_one_skip_and_the_end(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n{"c": 3}\n')
    with pytest.raises(InputError, match=r"r\.jsonl:2: not UTF-8 text"):
        list(read_records(path))
    first, skipped = read_records(path, strict=False)
    assert first.data == {"a": 1}
    assert skipped.source == str(path) and skipped.reason.endswith("stopped reading")


def test_reading_resumes_from_a_position(tmp_path):
    rows = [{"text": f"row {i}"} for i in range(5)]
    jsonl = _jsonl(tmp_path / "r.jsonl", [json.dumps(r) for r in rows])
    csv_path = tmp_path / "r.csv"
    csv_path.write_text("text,n\n" + "".join(f'"row {i}",{i}\n' for i in range(5)), encoding="utf-8")
    for path in (jsonl, csv_path):
        records = list(read_records(path))
        resumed = list(read_records(path, start=records[3].position, header=("text", "n")))
        assert [r.data["text"] for r in resumed] == ["row 3", "row 4"]
        assert [r.row for r in resumed] == [3, 4] and resumed[0].where.endswith(f":{records[3].position.line}")


def test_parquet_rows_and_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "extra": [1, 2, 3]}), path, row_group_size=2)
    records = list(read_records(path, columns=["text"]))
    assert [r.data for r in records] == [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    assert [r.data["text"] for r in read_records(path, start=records[2].position)] == ["c"]
