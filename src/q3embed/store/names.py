"""Rules for collection names, document ids and metadata, checked before anything touches a disk or
a server.

A collection name becomes a directory name (embedded store) and part of a Milvus collection name,
so it is restricted to what is safe in both: 1 to 64 characters, lowercase ASCII letters, digits,
`_` and `-`, starting with a letter or a digit. No path separators, no dots (so no `..`), no
uppercase (case-insensitive file systems would merge `Docs` and `docs`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InputError
from ..text.unicode import check_encodable, find_unencodable

__all__ = ["COLLECTION_NAME_RULE", "MAX_DOCUMENT_ID_BYTES", "MAX_METADATA_DEPTH", "MAX_METADATA_BYTES",
           "check_collection_name", "check_document_id", "check_metadata"]

COLLECTION_NAME_RULE = "1-64 characters: lowercase letters a-z, digits, '_' and '-', starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_DOCUMENT_ID_BYTES = 1024  # Milvus VARCHAR limit we declare; plenty for paths and keys
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Metadata is stored as JSON and read back (and filtered) with every hit: its nesting is bounded
# like a filter's, so that nothing it holds can exhaust a recursive reader (json, SQLite's json1).
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 65_536


def check_collection_name(name: Any) -> str:
    """The name itself, or InputError saying which rule it breaks."""
    if not isinstance(name, str):
        raise InputError(f"a collection name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InputError(f"invalid collection name {shown!r}: use {COLLECTION_NAME_RULE}")
    return name


def check_document_id(doc_id: Any) -> str:
    """Document ids are free text (file paths, keys) but non-empty, printable and bounded."""
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise InputError(f"a document id must be a string, not {type(doc_id).__name__}")
    text = check_encodable(str(doc_id), "a document id")
    if not text.strip():
        raise InputError("a document id is empty")
    if _CONTROL.search(text):
        raise InputError(f"document id {text[:80]!r} contains control characters")
    if len(text.encode("utf-8")) > MAX_DOCUMENT_ID_BYTES:
        raise InputError(f"document id {text[:40]!r}... is over {MAX_DOCUMENT_ID_BYTES} bytes")
    return text


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of objects and lists (a scalar is 0), counted without recursion, up to limit + 1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((inner, level) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_metadata(metadata: Any, doc_id: str) -> dict[str, Any]:
    """A JSON object with string keys, valid Unicode, at most MAX_METADATA_DEPTH levels deep and
    MAX_METADATA_BYTES as JSON; InputError naming the document and the rule otherwise."""
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InputError(f"document {doc_id!r}: metadata must be an object with string keys")
    if _depth(metadata, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise InputError(f"document {doc_id!r}: metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    problem = find_unencodable(metadata, "metadata")
    if problem:
        raise InputError(f"document {doc_id!r}: {problem}")
    try:
        size = len(json.dumps(metadata, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise InputError(f"document {doc_id!r}: metadata is not JSON-serialisable ({exc})") from None
    if size > MAX_METADATA_BYTES:
        raise InputError(f"document {doc_id!r}: metadata is {size} bytes as JSON, over the limit of "
                         f"{MAX_METADATA_BYTES}")
    return metadata
