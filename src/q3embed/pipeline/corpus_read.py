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

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from .records import Position, Record, csv_header, read_records, record_format, record_id

__all__ = ["CorpusFields", "ShardStart", "CorpusPlan", "RowBlock", "plan_corpus", "read_shard"]

AUTO_ID_FIELDS = ("_id", "id")  # BEIR's corpus.jsonl uses _id
ROW_NUMBER = ""  # resolved id field meaning "the row number is the id"
ShardStart = Position  # where a shard's first row starts


@dataclass(frozen=True)
class CorpusFields:
    text_field: str = "text"
    id_field: str | None = None  # None: `_id` or `id` when the input has it, else the row number
    title_field: str | None = None  # joined in front of the text ("title text"), as BEIR does


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


def _records(plan: CorpusPlan, start: ShardStart) -> Iterator[Record]:
    fields = plan.fields
    columns = [c for c in (fields.text_field, fields.id_field, fields.title_field) if c]
    return read_records(plan.path, plan.format, start=start, header=plan.header or None,  # type: ignore[return-value]
                        columns=columns if plan.format == "parquet" else None)


# ---------------------------------------------------------------- rows


def _row(record: Record, fields: CorpusFields) -> tuple[str, str]:
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
    try:
        doc_id = record_id(data.get(fields.id_field), record.where, str(fields.id_field))
    except InputError as exc:
        raise InputError(f"{exc} (choose the field with --id-field)") from None
    return doc_id, text.strip() and text


def _schema(path: Path, kind: str) -> tuple[tuple[str, ...], tuple[str, ...], ShardStart]:
    """(column names, CSV header, where the first row starts); JSONL answers from its first row."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return tuple(pq.ParquetFile(path).schema_arrow.names), (), ShardStart(0)
    if kind in ("csv", "tsv"):
        header, start = csv_header(path, kind)
        return header, header, start
    first = next(read_records(path, kind), None)
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
    kind = record_format(source)
    columns, header, start = _schema(source, kind)
    plan = CorpusPlan(source, kind, _resolve_fields(source, fields, columns, kind), shard_size, 0, [], [], header)
    rows = 0
    for record in _records(plan, start):
        if record.row % shard_size == 0:
            plan.starts.append(record.position)
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
