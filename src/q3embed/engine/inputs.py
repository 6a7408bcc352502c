"""Checks on what users pass in; each failure names the item and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..text.unicode import check_encodable

__all__ = ["check_texts", "check_text", "check_dimensions", "check_top_n"]


def check_text(value: Any, what: str, allow_empty: bool = False) -> str:
    """A string the model can take. Only "" is empty: whitespace is text, which the model embeds
    (the reference does too); allow_empty lets "" through as well (evaluation corpora)."""
    if value is None:
        raise InputError(f"{what} is None; a non-empty string is required")
    if not isinstance(value, str):
        raise InputError(f"{what} is a {type(value).__name__}, not a string")
    if not allow_empty and value == "":
        raise InputError(f"{what} is an empty string")
    return check_encodable(value, what)


def check_texts(texts: Any, what: str = "input", allow_empty: bool = False) -> tuple[list[str], bool]:
    """A string or a sequence of strings -> (list of strings, whether a single string was given)."""
    if isinstance(texts, str):
        return [check_text(texts, what, allow_empty)], True
    if texts is None:
        raise InputError(f"{what} is None; pass a string or a list of strings")
    if not isinstance(texts, Sequence):
        raise InputError(f"{what} must be a string or a list of strings, not {type(texts).__name__}")
    if len(texts) == 0:
        raise InputError(f"{what} is an empty list; pass at least one string")
    return [check_text(text, f"{what} {index}", allow_empty) for index, text in enumerate(texts)], False


def check_dimensions(dimensions: Any, hidden: int, minimum: int = 32) -> int | None:
    """MRL output size: None (full size) or an integer from `minimum` to the hidden size (the one
    check for every caller: requests, collections, embed-corpus, evaluation)."""
    if dimensions is None:
        return None
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise InputError(f"dimensions must be an integer, not {type(dimensions).__name__}")
    low = min(minimum, hidden)
    if not low <= dimensions <= hidden:
        raise InputError(f"dimensions must be from {low} to {hidden} for this model, got {dimensions}")
    return dimensions


def check_top_n(top_n: Any, count: int) -> int:
    if top_n is None:
        return count
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InputError(f"top_n must be a positive integer, got {top_n!r}")
    return min(top_n, count)
