"""Documents from files: a folder of .txt / .md / .html files, or JSONL / CSV records with a text column.

    folder/            every .txt .md .markdown .html .htm file below it (hidden entries ignored);
                       id = the path relative to the folder; metadata {"source", "format"[, "title"]}
    file.txt|md|html   one document; id = the file name
    file.jsonl         one JSON object per line: the text field, an optional id field, and every
                       other field as metadata; without an id field the id is "file.jsonl:LINE"
    file.csv|tsv       a header row, then the same as JSONL (values are strings)
    file.parquet       the same as JSONL, one row a record

Record files are read by pipeline.records in its lenient mode: nothing here raises on bad
content. Unreadable, binary, non-UTF-8 or empty files and bad records come back as
`Skipped(source, reason)` so that an ingest can list them and go on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ..errors import InputError
from .records import RECORD_FORMATS, Record, Skipped, csv_header, read_records, record_id

__all__ = ["Document", "Skipped", "ReaderOptions", "read_source", "count_source", "html_to_text",
           "TEXT_SUFFIXES"]

# Files that are one document each; record files are pipeline.records' RECORD_FORMATS.
TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


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
    elif root.suffix.lower() in RECORD_FORMATS:
        yield from _read_records(root, options)
    else:
        yield _read_text_file(root, root.name)


def count_source(path: str | Path) -> int | None:
    """How many items read_source will yield (for a progress bar); None when not cheap to know."""
    root = Path(path).expanduser()
    try:
        if root.is_dir():
            return sum(1 for _ in _folder_files(root))
        kind = RECORD_FORMATS.get(root.suffix.lower())
        if kind == "jsonl":  # a record (or a skipped bad line) per non-blank line: no need to parse JSON
            with open(root, "rb") as f:
                return sum(1 for line in f if line.strip())
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(root).metadata.num_rows
        if kind is not None:  # CSV: a cell may span lines, so only the CSV reader can count rows
            return sum(1 for _ in read_records(root, kind, strict=False))
        return 1
    except (OSError, InputError):
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


def _record_document(record: Record, options: ReaderOptions) -> Document | Skipped:
    data = record.data
    if not isinstance(data, dict):
        return Skipped(record.where, f"a record must be a JSON object, not {type(data).__name__}")
    text = data.get(options.text_field)
    if not isinstance(text, str) or not text.strip():
        return Skipped(record.where, f"no text in field {options.text_field!r}")
    raw_id = data.get(options.id_field)
    try:
        doc_id = record.default_id if raw_id is None or raw_id == "" else record_id(raw_id, "", options.id_field)
    except InputError as exc:
        return Skipped(record.where, str(exc).removeprefix(": "))
    skip = {options.text_field, options.id_field}
    wanted = options.metadata_fields
    metadata = {k: v for k, v in data.items() if k not in skip and (wanted is None or k in wanted)}
    return Document(doc_id, text, metadata)


def _read_records(file: Path, options: ReaderOptions) -> Iterator[Document | Skipped]:
    try:
        with open(file, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        yield Skipped(str(file), f"unreadable: {exc.strerror or exc}")
        return
    kind = RECORD_FORMATS[file.suffix.lower()]
    if kind != "parquet" and b"\x00" in head:
        yield Skipped(str(file), "binary file")
        return
    if kind in ("csv", "tsv"):
        try:
            columns = csv_header(file, kind)[0]
        except InputError as exc:
            yield Skipped(str(file), str(exc).removeprefix(f"{file}: "))
            return
        if options.text_field not in columns:
            yield Skipped(str(file), f"no {options.text_field!r} column (columns: {', '.join(columns) or 'none'})")
            return
    for item in read_records(file, kind, strict=False):
        yield item if isinstance(item, Skipped) else _record_document(item, options)


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
