"""Corpus rows from JSONL, CSV/TSV or Parquet files, streamed: no file is ever held in memory.

A corpus is cut into shards of `shard_size` consecutive rows (shard k = rows [k*S, (k+1)*S) in
file order), so what lands in which shard depends on the input alone. `plan_corpus` reads the
file once, checks every row, and records where each shard starts (a byte offset and line number
for text files, a row number for Parquet); `read_shard` then reads one shard from there. The
single-process job and every Ray worker read shards the same way, so their outputs agree.

Rows whose text is empty are left out (and counted); a row without the text field, a bad JSON
line or a non-UTF-8 byte stops the job with the place (FILE:LINE) and the reason.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError

__all__ = ["CORPUS_FORMATS", "CorpusFields", "ShardStart", "CorpusPlan", "RowBlock", "corpus_format",
           "plan_corpus", "read_shard"]

CORPUS_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
                  ".pq": "parquet"}
AUTO_ID_FIELDS = ("_id", "id")  # BEIR's corpus.jsonl uses _id
ROW_NUMBER = ""  # resolved id field meaning "the row number is the id"
_PARQUET_BATCH_ROWS = 4096


@dataclass(frozen=True)
class CorpusFields:
    text_field: str = "text"
    id_field: str | None = None  # None: `_id` or `id` when the input has it, else the row number
    title_field: str | None = None  # joined in front of the text ("title text"), as BEIR does


@dataclass(frozen=True)
class ShardStart:
    row: int  # index of the shard's first row in the input (blank lines are not rows)
    offset: int = 0  # byte offset of that row in a JSONL/CSV file
    line: int = 1  # its line number, for error messages


@dataclass(frozen=True)
class CorpusPlan:
    path: Path
    format: str
    fields: CorpusFields  # id_field resolved: a field name, or ROW_NUMBER
    shard_size: int
    rows: int
    starts: list[ShardStart]  # one per shard
    kept: list[int]  # rows with a non-empty text, per shard
    header: tuple[str, ...] = ()  # CSV/TSV column names

    @property
    def shards(self) -> int:
        return len(self.starts)

    def shard_rows(self, shard: int) -> int:
        """Rows of the input that belong to shard k (the last one may be short)."""
        return min(self.shard_size, self.rows - shard * self.shard_size)


@dataclass
class RowBlock:
    """Consecutive input rows with a non-empty text: parallel lists, in input order."""

    rows: list[int] = field(default_factory=list)  # index in the input
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Record:
    row: int
    offset: int
    line: int
    where: str  # FILE:LINE or FILE:row N
    data: Any


def corpus_format(path: Path) -> str:
    kind = CORPUS_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"input '{path}' must be a .jsonl, .ndjson, .csv, .tsv or .parquet file, "
                         f"not '{path.suffix or '(no suffix)'}'")
    if not path.is_file():
        raise InputError(f"no such input file: {path}")
    return kind


# ---------------------------------------------------------------- records


def _lines(handle: BinaryIO, offset: int, line: int, path: Path, position: list[int]) -> Iterator[str]:
    """Decoded lines from `offset`; position[0] / position[1] track the next byte and line number."""
    handle.seek(offset)
    position[:] = [offset, line]
    for raw in handle:
        try:
            text = raw.decode("utf-8-sig" if position[0] == 0 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}:{position[1]}: not UTF-8 text (byte {exc.start} of the line)") from None
        position[0] += len(raw)
        position[1] += 1
        yield text


def _jsonl_records(path: Path, start: ShardStart) -> Iterator[_Record]:
    position = [0, 0]
    row = start.row
    with open(path, "rb") as handle:
        lines = _lines(handle, start.offset, start.line, path, position)
        while True:
            offset, line = position if position[1] else (start.offset, start.line)
            text = next(lines, None)
            if text is None:
                return
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise InputError(f"{path}:{line}: not JSON: {exc}") from None
            yield _Record(row, offset, line, f"{path.name}:{line}", data)
            row += 1


def _csv_header(path: Path, delimiter: str) -> tuple[tuple[str, ...], ShardStart]:
    """The column names and where the first data row starts."""
    position = [0, 0]
    with open(path, "rb") as handle:
        reader = csv.reader(_lines(handle, 0, 1, path, position), delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise InputError(f"{path}: no header row (the first line must name the columns)")
        return tuple(header), ShardStart(0, position[0], position[1])


def _csv_records(path: Path, start: ShardStart, header: tuple[str, ...], delimiter: str) -> Iterator[_Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts in one cell are the point here
    position = [0, 0]
    row = start.row
    with open(path, "rb") as handle:
        # csv pulls lines only as it needs them, so `position` before next() is where a record starts
        reader = csv.reader(_lines(handle, start.offset, start.line, path, position), delimiter=delimiter)
        while True:
            offset, line = position if position[1] else (start.offset, start.line)
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                raise InputError(f"{path}:{line}: not valid CSV: {exc}") from None
            if cells is None:
                return
            if not cells:  # a blank line is not a row
                continue
            yield _Record(row, offset, line, f"{path.name}:{line}", dict(zip(header, cells)))
            row += 1


def _parquet_records(path: Path, start: ShardStart, columns: list[str]) -> Iterator[_Record]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    metadata = handle.metadata
    first_row, group = 0, 0
    while group < metadata.num_row_groups and first_row + metadata.row_group(group).num_rows <= start.row:
        first_row += metadata.row_group(group).num_rows  # skip whole row groups before the shard
        group += 1
    groups = list(range(group, metadata.num_row_groups))
    row = first_row
    for batch in handle.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
        for data in batch.to_pylist():
            if row >= start.row:
                yield _Record(row, row, row + 1, f"{path.name}:row {row}", data)
            row += 1


def _records(plan: CorpusPlan, start: ShardStart) -> Iterator[_Record]:
    if plan.format == "jsonl":
        return _jsonl_records(plan.path, start)
    if plan.format == "parquet":
        fields = plan.fields
        columns = [c for c in (fields.text_field, fields.id_field, fields.title_field) if c]
        return _parquet_records(plan.path, start, columns)
    return _csv_records(plan.path, start, plan.header, _delimiter(plan.format))


# ---------------------------------------------------------------- rows


def _row(record: _Record, fields: CorpusFields) -> tuple[str, str]:
    """(id, text) of one record; text "" means left out."""
    data = record.data
    if not isinstance(data, dict):
        raise InputError(f"{record.where}: a row must be a JSON object, not {type(data).__name__}")
    text = data.get(fields.text_field)
    if not isinstance(text, str):
        what = "missing" if text is None else f"a {type(text).__name__}, not a string"
        raise InputError(f"{record.where}: the text field {fields.text_field!r} is {what} "
                         "(choose the field with --text-field)")
    title = data.get(fields.title_field) if fields.title_field else None
    if isinstance(title, str) and title.strip():
        text = f"{title} {text}"
    if fields.id_field == ROW_NUMBER:
        return str(record.row), text.strip() and text
    raw_id = data.get(fields.id_field)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise InputError(f"{record.where}: the id field {fields.id_field!r} must be a non-empty string or an "
                         f"integer, got {raw_id!r} (choose the field with --id-field)")
    return str(raw_id), text.strip() and text


def _delimiter(kind: str) -> str:
    return "\t" if kind == "tsv" else ","


def _schema(path: Path, kind: str) -> tuple[tuple[str, ...], tuple[str, ...], ShardStart]:
    """(column names, CSV header, where the first row starts); JSONL answers from its first row."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return tuple(pq.ParquetFile(path).schema_arrow.names), (), ShardStart(0)
    if kind in ("csv", "tsv"):
        header, start = _csv_header(path, _delimiter(kind))
        return header, header, start
    first = next(_jsonl_records(path, ShardStart(0)), None)
    columns = tuple(first.data) if first is not None and isinstance(first.data, dict) else ()
    return columns, (), ShardStart(0)


def _resolve_fields(path: Path, fields: CorpusFields, columns: tuple[str, ...], kind: str) -> CorpusFields:
    names = ", ".join(columns) or "none"
    if columns and fields.text_field not in columns:
        raise InputError(f"{path}: no text field {fields.text_field!r} (fields: {names}); choose one with --text-field")
    for flag, name in (("--id-field", fields.id_field), ("--title-field", fields.title_field)):
        if name and columns and name not in columns and kind != "jsonl":
            raise InputError(f"{path}: no field {name!r} (fields: {names}); check {flag}")
    if fields.id_field is None:
        found = next((name for name in AUTO_ID_FIELDS if name in columns), ROW_NUMBER)
        return replace(fields, id_field=found)
    return fields


def plan_corpus(path: str | Path, fields: CorpusFields, shard_size: int) -> CorpusPlan:
    """Read the whole input once (checking every row) and note where each shard starts."""
    source = Path(path).expanduser().resolve()
    kind = corpus_format(source)
    columns, header, start = _schema(source, kind)
    plan = CorpusPlan(source, kind, _resolve_fields(source, fields, columns, kind), shard_size, 0, [], [], header)
    rows = 0
    for record in _records(plan, start):
        if record.row % shard_size == 0:
            plan.starts.append(ShardStart(record.row, record.offset, record.line))
            plan.kept.append(0)
        plan.kept[-1] += bool(_row(record, plan.fields)[1])
        rows += 1
    if rows == 0 or not any(plan.kept):
        raise InputError(f"input '{source}' holds no texts (no rows, or only empty {plan.fields.text_field!r} fields)")
    return replace(plan, rows=rows)


def read_shard(plan: CorpusPlan, shard: int) -> tuple[RowBlock, int]:
    """The rows of shard k with a text, and how many rows of it had an empty text."""
    block, empty = RowBlock(), 0
    end = plan.starts[shard].row + plan.shard_rows(shard)
    for record in _records(plan, plan.starts[shard]):
        if record.row >= end:
            break
        doc_id, text = _row(record, plan.fields)
        if not text:
            empty += 1
            continue
        block.rows.append(record.row)
        block.ids.append(doc_id)
        block.texts.append(text)
    return block, empty
