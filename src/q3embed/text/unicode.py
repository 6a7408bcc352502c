"""The one rule for user text: it must be encodable as UTF-8.

JSON lets a client send a lone surrogate ("\\ud800"), which Python decodes into a string that no
tokenizer, database or JSON encoder accepts. Every text a user gives (inputs, queries, documents,
instructions, ids, metadata keys and values, filter values) is checked with these two functions
before a tokenizer or a store sees it, so the answer is a 4xx that names the field, never a 500.

NUL and other control characters are valid text and pass (the tokenizer treats them as
characters); only document ids refuse control characters (store/names.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError

__all__ = ["check_encodable", "find_unencodable"]


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _problem(what: str, text: str, at: int) -> str:
    return (f"{what} is not valid Unicode text: a lone surrogate (U+{ord(text[at]):04X}) at character {at}; "
            "send UTF-8 text")


def check_encodable(text: str, what: str) -> str:
    """`text` itself, or InputError naming `what` and where the unencodable character is."""
    at = _surrogate_at(text)
    if at is not None:
        raise InputError(_problem(what, text, at))
    return text


def find_unencodable(value: Any, where: str = "body") -> str | None:
    """The problem with the first unencodable string (a key or a value) anywhere in a JSON-like
    value, naming its place (body.documents.0.metadata.title), or None when every string is fine."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            at = _surrogate_at(item)
            if at is not None:
                return _problem(path, item, at)
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                if isinstance(key, str) and _surrogate_at(key) is not None:
                    return _problem(f"a key of {path}", key, _surrogate_at(key) or 0)
                stack.append((inner, f"{path}.{key}"))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, f"{path}.{index}") for index, inner in enumerate(item))
    return None
