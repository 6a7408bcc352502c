"""Records from files: the one reader behind every input of q3embed.

`q3embed index` (pipeline/readers.py), embed-corpus (pipeline/corpus_read.py), BEIR datasets
(evaluate/beir.py) and the CLI's --input files (cli/io.py) all read JSONL, CSV/TSV and Parquet
through `read_records`, with one suffix table, one id rule and one policy switch:

    strict    the first bad line (not JSON, not UTF-8, broken CSV) is an InputError naming FILE:LINE
    lenient   a bad line comes back as Skipped(FILE:LINE, reason) and reading goes on; a file that
              stops decoding comes back as one Skipped for the file, and reading stops there

Files are streamed (never held in memory), and every record carries where it starts (a byte
offset and line number, or a Parquet row), so that a reader can come back to it (embed-corpus
shards).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError

__all__ = ["RECORD_FORMATS", "Position", "Record", "Skipped", "record_format", "read_records", "csv_header",
           "record_id"]

# The one suffix table of record files; a folder reader takes single documents (.txt, .md, .html) too.
RECORD_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
                  ".pq": "parquet"}
_PARQUET_BATCH_ROWS = 4096


@dataclass(frozen=True)
class Position:
    """Where a record starts: its index among the file's records (blank lines are not records), the
    byte offset and line number of a JSONL/CSV line, or (Parquet) offset = row."""

    row: int = 0
    offset: int = 0
    line: int = 1


@dataclass(frozen=True)
class Record:
    position: Position
    where: str  # FILE:LINE (FILE:row N for Parquet), for messages
    data: Any  # a JSON value (JSONL), {column: text} (CSV/TSV), {column: value} (Parquet)

    @property
    def row(self) -> int:
        return self.position.row

    @property
    def default_id(self) -> str:
        """NAME:LINE: the id of a record that has none (stable wherever the file is moved)."""
        return f"{Path(self.where.rsplit(':', 1)[0]).name}:{self.where.rsplit(':', 1)[1]}"


@dataclass(frozen=True)
class Skipped:
    source: str  # a file, or FILE:LINE for one record
    reason: str


def record_format(path: Path, allowed: dict[str, str] = RECORD_FORMATS) -> str:
    """The format of a record file by its suffix; InputError for another suffix or a missing file."""
    kind = allowed.get(path.suffix.lower())
    if kind is None:
        *most, last = allowed
        names = f"{', '.join(most)} or {last}" if most else last
        raise InputError(f"input '{path}' must be a {names} file, not '{path.suffix or '(no suffix)'}'")
    if not path.is_file():
        raise InputError(f"no such input file: {path}")
    return kind


def record_id(value: Any, where: str, field: str) -> str:
    """The one id rule: a non-empty string, or an integer (as its decimal text); booleans and
    floats are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise InputError(f"{where}: the id field {field!r} must be a non-empty string or an integer, got {value!r}")
    return str(value)


def _lines(handle: BinaryIO, start: Position, path: Path, position: list[int]) -> Iterator[str]:
    """Decoded lines from `start`; position[0] / position[1] track the next byte and line number."""
    handle.seek(start.offset)
    position[:] = [start.offset, start.line]
    for raw in handle:
        try:
            text = raw.decode("utf-8-sig" if position[0] == 0 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}:{position[1]}: not UTF-8 text (byte {exc.start} of the line)") from None
        position[0] += len(raw)
        position[1] += 1
        yield text


def _jsonl(path: Path, start: Position, strict: bool) -> Iterator[Record | Skipped]:
    position = [0, 0]
    row = start.row
    with open(path, "rb") as handle:
        lines = _lines(handle, start, path, position)
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
                if strict:
                    raise InputError(f"{path}:{line}: not valid JSON ({exc})") from None
                yield Skipped(f"{path}:{line}", f"not valid JSON ({exc})")
                continue
            yield Record(Position(row, offset, line), f"{path}:{line}", data)
            row += 1


def csv_header(path: Path, kind: str) -> tuple[tuple[str, ...], Position]:
    """The column names of a CSV/TSV file and where its first data row starts."""
    position = [0, 0]
    with open(path, "rb") as handle:
        reader = csv.reader(_lines(handle, Position(), path, position), delimiter=_delimiter(kind))
        header = next(reader, None)
        if not header:
            raise InputError(f"{path}: no header row (the first line must name the columns)")
        return tuple(header), Position(0, position[0], position[1])


def _delimiter(kind: str) -> str:
    return "\t" if kind == "tsv" else ","


def _csv(path: Path, kind: str, start: Position | None, header: tuple[str, ...] | None) -> Iterator[Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts in one cell are the point here
    if header is None or start is None:
        header, start = csv_header(path, kind)
    position = [0, 0]
    row = start.row
    with open(path, "rb") as handle:
        # csv pulls lines only as it needs them, so `position` before next() is where a record starts
        reader = csv.reader(_lines(handle, start, path, position), delimiter=_delimiter(kind))
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
            yield Record(Position(row, offset, line), f"{path}:{line}", dict(zip(header, cells)))
            row += 1


def _parquet(path: Path, start: Position, columns: list[str] | None) -> Iterator[Record]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    metadata = handle.metadata
    first_row, group = 0, 0
    while group < metadata.num_row_groups and first_row + metadata.row_group(group).num_rows <= start.row:
        first_row += metadata.row_group(group).num_rows  # skip whole row groups before the start
        group += 1
    row = first_row
    groups = list(range(group, metadata.num_row_groups))
    for batch in handle.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
        for data in batch.to_pylist():
            if row >= start.row:
                yield Record(Position(row, row, row + 1), f"{path}:row {row}", data)
            row += 1


def read_records(path: Path, kind: str | None = None, *, strict: bool = True, start: Position | None = None,
                 header: tuple[str, ...] | None = None, columns: list[str] | None = None) -> Iterator[Record | Skipped]:
    """The records of a JSONL, CSV/TSV or Parquet file, from `start` (default: the first).

    CSV/TSV records are {column: text} by the header row (pass `header` with a `start` past it to
    resume); `columns` limits what Parquet reads. With strict=False, problems are yielded as
    Skipped (see the module docstring); with strict=True only Records are yielded.
    """
    kind = kind or record_format(path)
    try:
        if kind == "jsonl":
            yield from _jsonl(path, start or Position(), strict)
        elif kind == "parquet":
            yield from _parquet(path, start or Position(), columns)
        else:
            yield from _csv(path, kind, start, header)
    except InputError as exc:
        if strict:
            raise
        yield Skipped(str(path), f"{exc}; stopped reading")
    except OSError as exc:
        if strict:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        yield Skipped(str(path), f"unreadable: {exc.strerror or exc}")
