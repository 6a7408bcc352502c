"""Reading CLI input files and writing CLI outputs.

Kept apart from the argument parsing so that every file problem (missing, unreadable, bad JSON on
line N, unknown extension) turns into one `InputError` whose message names the file and line:
the CLI prints that one line, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import InputError
from ..pipeline.records import RECORD_FORMATS, Record, read_records, record_format

__all__ = [
    "RerankRequest",
    "check_output_path",
    "collect_texts",
    "collect_rerank_requests",
    "read_texts",
    "read_rerank_requests",
    "write_embeddings",
    "write_jsonl",
]


JSONL_ONLY = {suffix: kind for suffix, kind in RECORD_FORMATS.items() if kind == "jsonl"}
OUTPUT_SUFFIXES = (".npy", ".jsonl")


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]


def _read_text_file(path: Path) -> str:
    """The whole file as UTF-8; every OS or decoding failure becomes an InputError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file '{path}' does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input file '{path}' is a directory") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"input file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read input file '{path}': {exc.strerror or exc}") from None


def _records(path: Path, formats: dict[str, str]) -> Iterator[Record]:
    """The records of an input file, strictly (pipeline.records: a bad line names FILE:LINE)."""
    if path.is_dir():
        raise InputError(f"input file '{path}' is a directory")
    if not path.exists() and path.suffix.lower() in formats:
        raise InputError(f"input file '{path}' does not exist")
    return read_records(path, record_format(path, formats))  # type: ignore[return-value]


def _text_of(record: Record) -> str:
    """An embedding record is a JSON string, or an object (a CSV/Parquet row) with a string `text` field."""
    value = record.data
    if isinstance(value, dict):
        value = value.get("text")
        if not isinstance(value, str):
            raise InputError(f'{record.where}: a record needs a string "text" field')
    if not isinstance(value, str):
        raise InputError(f'{record.where}: expected a JSON string or an object with a "text" field')
    return value


def read_texts(path: Path) -> list[str]:
    """Texts to embed: .txt (one per non-blank line), or a record file (.jsonl strings or
    {"text": ...} objects; .csv/.tsv/.parquet with a text column)."""
    if path.suffix.lower() == ".txt":
        texts = [line for line in _read_text_file(path).splitlines() if line.strip()]
    else:
        texts = [_text_of(record) for record in _records(path, RECORD_FORMATS)]
    if not texts:
        raise InputError(f"input file '{path}' holds no texts")
    return texts


def _request_of(record: Record) -> RerankRequest:
    value = record.data
    if not isinstance(value, dict):
        raise InputError(f'{record.where}: expected an object {{"query": ..., "documents": [...]}}')
    query, documents = value.get("query"), value.get("documents")
    if not isinstance(query, str):
        raise InputError(f'{record.where}: "query" must be a string')
    if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
        raise InputError(f'{record.where}: "documents" must be a non-empty list of strings')
    return RerankRequest(query, documents)


def read_rerank_requests(path: Path) -> list[RerankRequest]:
    """Rerank requests: .jsonl, one {"query": str, "documents": [str, ...]} object per line."""
    requests = [_request_of(record) for record in _records(path, JSONL_ONLY)]
    if not requests:
        raise InputError(f"input file '{path}' holds no rerank requests")
    return requests


def _one_source(has_args: bool, input_path: Path | None, what: str) -> None:
    """Arguments or --input, exactly one: mixing them would leave the output order ambiguous."""
    if has_args and input_path is not None:
        raise InputError(f"give {what} as arguments or with --input, not both")
    if not has_args and input_path is None:
        raise InputError(f"no {what}: give them as arguments or with --input FILE")


def collect_texts(texts: Sequence[str], input_path: Path | None) -> list[str]:
    """The texts of `embed`: from the command line or from --input, never both."""
    _one_source(bool(texts), input_path, "texts")
    return read_texts(input_path) if input_path is not None else list(texts)


def collect_rerank_requests(
    query: str | None, documents: Sequence[str], input_path: Path | None
) -> list[RerankRequest]:
    """The requests of `rerank`: QUERY DOC... on the command line, or --input, never both."""
    _one_source(query is not None, input_path, "query and documents")
    if input_path is not None:
        return read_rerank_requests(input_path)
    assert query is not None  # _one_source: no --input means a query was given
    if not documents:
        raise InputError("no documents to rerank: give them after the query")
    return [RerankRequest(query, list(documents))]


def write_jsonl(rows: Iterable[Any], stream: TextIO | None = None) -> None:
    """One compact JSON value per line: easy to pipe into jq, grep or another program."""
    out = stream if stream is not None else sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _embedding_rows(vectors: np.ndarray) -> Iterator[dict[str, Any]]:
    for index, vector in enumerate(vectors):
        yield {"index": index, "embedding": vector.tolist()}


def _output_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output file '{path}' must end in {' or '.join(OUTPUT_SUFFIXES)}, not '{suffix or '(none)'}'")
    return suffix


def check_output_path(path: Path | None) -> None:
    """Fail before the model loads and the texts are encoded, not after minutes of work."""
    if path is None:
        return
    _output_suffix(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write output file '{path}': folder '{path.parent}' does not exist")


def write_embeddings(vectors: np.ndarray, path: Path | None) -> None:
    """[N, d] float32 vectors to .npy, to .jsonl, or (path None) as JSON lines on stdout."""
    if path is None:
        write_jsonl(_embedding_rows(vectors))
        return
    suffix = _output_suffix(path)
    try:
        if suffix == ".npy":
            with path.open("wb") as handle:  # a handle, so numpy cannot append a second .npy
                np.save(handle, np.asarray(vectors, dtype=np.float32))
        else:
            with path.open("w", encoding="utf-8") as handle:
                write_jsonl(_embedding_rows(vectors), handle)
    except OSError as exc:
        raise InputError(f"cannot write output file '{path}': {exc.strerror or exc}") from None
