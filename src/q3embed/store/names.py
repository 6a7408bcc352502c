"""Rules for collection names and document ids, checked before anything touches a disk or a server.

A collection name becomes a directory name (embedded store) and part of a Milvus collection name,
so it is restricted to what is safe in both: 1 to 64 characters, lowercase ASCII letters, digits,
`_` and `-`, starting with a letter or a digit. No path separators, no dots (so no `..`), no
uppercase (case-insensitive file systems would merge `Docs` and `docs`).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import InputError

__all__ = ["COLLECTION_NAME_RULE", "MAX_DOCUMENT_ID_BYTES", "check_collection_name", "check_document_id"]

COLLECTION_NAME_RULE = "1-64 characters: lowercase letters a-z, digits, '_' and '-', starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_DOCUMENT_ID_BYTES = 1024  # Milvus VARCHAR limit we declare; plenty for paths and keys
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    text = str(doc_id)
    if not text.strip():
        raise InputError("a document id is empty")
    if _CONTROL.search(text):
        raise InputError(f"document id {text[:80]!r} contains control characters")
    if len(text.encode("utf-8")) > MAX_DOCUMENT_ID_BYTES:
        raise InputError(f"document id {text[:40]!r}... is over {MAX_DOCUMENT_ID_BYTES} bytes")
    return text
