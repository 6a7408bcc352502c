"""Documents from files: a folder of .txt / .md / .html files, or JSONL / CSV records with a text column.

    folder/            every .txt .md .markdown .html .htm file below it (hidden entries ignored);
                       id = the path relative to the folder; metadata {"source", "format"[, "title"]}
    file.txt|md|html   one document; id = the file name
    file.jsonl         one JSON object per line: the text field, an optional id field, and every
                       other field as metadata; without an id field the id is "file.jsonl:LINE"
    file.csv|tsv       a header row, then the same as JSONL (values are strings)

Nothing here raises on bad content: unreadable, binary, non-UTF-8 or empty files and bad records
come back as `Skipped(source, reason)` so that an ingest can list them and go on.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

__all__ = ["Document", "Skipped", "ReaderOptions", "read_source", "count_source", "html_to_text",
           "TEXT_SUFFIXES", "RECORD_SUFFIXES"]

TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    source: str  # a file, or file:line for one record
    reason: str


@dataclass(frozen=True)
class ReaderOptions:
    text_field: str = "text"  # JSONL key / CSV column holding the text
    id_field: str = "id"  # JSONL key / CSV column holding the document id (optional)
    metadata_fields: tuple[str, ...] | None = None  # None: every other field


def read_source(path: str | Path, options: ReaderOptions = ReaderOptions()) -> Iterator[Document | Skipped]:
    """Documents (and what was skipped, with why) from a folder or one file, in a stable order."""
    root = Path(path).expanduser()
    if root.is_dir():
        for file in _folder_files(root):
            yield _read_text_file(file, file.relative_to(root).as_posix())
    elif not root.exists():
        yield Skipped(str(root), "no such file or folder")
    elif root.suffix.lower() in RECORD_SUFFIXES:
        yield from _read_records(root, options)
    else:
        yield _read_text_file(root, root.name)


def count_source(path: str | Path) -> int | None:
    """How many items read_source will yield (for a progress bar); None when not cheap to know."""
    root = Path(path).expanduser()
    try:
        if root.is_dir():
            return sum(1 for _ in _folder_files(root))
        kind = RECORD_SUFFIXES.get(root.suffix.lower())
        if kind == "jsonl":
            with open(root, "rb") as f:
                return sum(1 for line in f if line.strip())
        if kind in ("csv", "tsv"):
            with open(root, encoding="utf-8-sig", errors="replace", newline="") as f:
                return max(0, sum(1 for _ in csv.reader(f, delimiter="\t" if kind == "tsv" else ",")) - 1)
        return 1
    except (OSError, csv.Error):
        return None


def _folder_files(root: Path) -> Iterator[Path]:
    """Every non-hidden file below root, sorted; the reader decides what each one is."""
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield from _folder_files(entry)
        elif entry.is_file():
            yield entry


def _decode(data: bytes) -> tuple[str | None, str]:
    """(text, "") or (None, why not)."""
    if b"\x00" in data[:_SNIFF_BYTES]:
        return None, "binary file"
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"


def _read_text_file(file: Path, doc_id: str) -> Document | Skipped:
    kind = TEXT_SUFFIXES.get(file.suffix.lower())
    if kind is None:
        return Skipped(str(file), f"unsupported file type {file.suffix or '(none)'!r}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        return Skipped(str(file), f"unreadable: {exc.strerror or exc}")
    text, problem = _decode(data)
    if text is None:
        return Skipped(str(file), problem)
    metadata: dict[str, Any] = {"source": doc_id, "format": kind}
    if kind == "html":
        title, text = html_to_text(text)
        if title:
            metadata["title"] = title
    if not text.strip():
        return Skipped(str(file), "no text")
    return Document(doc_id, text, metadata)


def _record_document(record: Any, where: str, options: ReaderOptions) -> Document | Skipped:
    if not isinstance(record, dict):
        return Skipped(where, f"a record must be a JSON object, not {type(record).__name__}")
    text = record.get(options.text_field)
    if not isinstance(text, str) or not text.strip():
        return Skipped(where, f"no text in field {options.text_field!r}")
    raw_id = record.get(options.id_field)
    if raw_id is None or raw_id == "":
        doc_id = where
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        doc_id = str(raw_id)
    else:
        return Skipped(where, f"id field {options.id_field!r} must be a string or an integer")
    skip = {options.text_field, options.id_field}
    wanted = options.metadata_fields
    metadata = {k: v for k, v in record.items() if k not in skip and (wanted is None or k in wanted)}
    return Document(doc_id, text, metadata)


def _read_records(file: Path, options: ReaderOptions) -> Iterator[Document | Skipped]:
    try:
        with open(file, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        yield Skipped(str(file), f"unreadable: {exc.strerror or exc}")
        return
    if b"\x00" in head:
        yield Skipped(str(file), "binary file")
        return
    kind = RECORD_SUFFIXES[file.suffix.lower()]
    try:
        with open(file, encoding="utf-8-sig", newline="") as f:
            yield from (_jsonl_records(f, file, options) if kind == "jsonl" else _csv_records(f, file, kind, options))
    except UnicodeDecodeError as exc:
        yield Skipped(str(file), f"not UTF-8 text (byte {exc.start} of a block); stopped reading")
    except (OSError, csv.Error) as exc:
        yield Skipped(str(file), f"unreadable: {exc}")


def _jsonl_records(f: Any, file: Path, options: ReaderOptions) -> Iterator[Document | Skipped]:
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        where = f"{file.name}:{number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield Skipped(f"{file}:{number}", f"not JSON: {exc}")
            continue
        item = _record_document(record, where, options)
        yield Skipped(f"{file}:{number}", item.reason) if isinstance(item, Skipped) else item


def _csv_records(f: Any, file: Path, kind: str, options: ReaderOptions) -> Iterator[Document | Skipped]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts in one cell are the point here
    reader = csv.DictReader(f, delimiter="\t" if kind == "tsv" else ",")
    if options.text_field not in (reader.fieldnames or []):
        columns = ", ".join(reader.fieldnames or []) or "none"
        yield Skipped(str(file), f"no {options.text_field!r} column (columns: {columns})")
        return
    for number, row in enumerate(reader, start=2):  # line 1 is the header
        row.pop(None, None)  # extra cells beyond the header
        item = _record_document(row, f"{file.name}:{number}", options)
        yield Skipped(f"{file}:{number}", item.reason) if isinstance(item, Skipped) else item


# ---------------------------------------------------------------- HTML

_BLOCK = frozenset("address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 "
                   "h6 header hr li main nav ol p pre section table td th tr ul".split())
_HIDDEN = frozenset("script style noscript template svg head".split())


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.hidden = 0  # depth inside elements whose text is not content
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text): block elements become line breaks, runs of blank lines become one."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return " ".join("".join(parser.title).split()), text
