"""Metadata filters: one small JSON language, run in SQLite (embedded store) or as a Milvus expression.

    {"lang": "en"}                              equality
    {"lang": "en", "year": {"$gte": 2020}}      several fields: all must hold
    {"year": {"$gt": 2019, "$lt": 2024}}        operators: $eq $ne $gt $gte $lt $lte $in $nin
    {"tag": {"$in": ["a", "b"]}}                one of the values
    {"$or": [{"lang": "en"}, {"lang": "de"}]}   $and / $or take a list of filters
    {"source.kind": "web"}                      a dotted name reaches into nested objects

Values are strings, numbers or booleans. Matching follows Milvus, so that both stores give the same
answers: a field that is missing (or null) never matches, not even $ne or $nin; booleans count as
the numbers 1 and 0; strings compare with strings only and numbers with numbers; ranges on strings
compare by code point. Filters apply to a document's metadata, which each of its chunks shares.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from ..errors import InputError
from ..text.unicode import check_encodable

__all__ = ["Condition", "Filter", "parse_filter", "to_sql", "to_milvus"]

Scalar = Union[str, int, float, bool]
RANGE_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPS = ("$eq", "$ne", "$in", "$nin", *RANGE_OPS)
_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_CONDITIONS = 256
MAX_DEPTH = 8
MAX_IN_VALUES = 1024
_INT64 = 2**63


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]  # ("source", "kind") for "source.kind"
    op: str  # one of OPS
    value: Scalar | tuple[Scalar, ...]  # a tuple for $in / $nin


@dataclass(frozen=True)
class Filter:
    combine: str  # "and" or "or"
    items: tuple["Condition | Filter", ...]


def parse_filter(spec: str | Mapping[str, Any] | None) -> Filter | None:
    """A JSON text or an already-decoded object -> Filter (None or {} -> None); InputError if malformed."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if not spec.strip():
            return None
        try:
            spec = json.loads(spec)
        except ValueError as exc:
            raise InputError(f"the filter is not valid JSON: {exc}") from None
    counter = [0]
    parsed = _parse_object(spec, 0, counter)
    return parsed if parsed.items else None


def _parse_object(spec: Any, depth: int, counter: list[int]) -> Filter:
    if not isinstance(spec, Mapping):
        raise InputError(f'a filter must be a JSON object like {{"field": value}}, not {type(spec).__name__}')
    if depth > MAX_DEPTH:
        raise InputError(f"the filter nests $and/$or deeper than {MAX_DEPTH} levels")
    items: list[Condition | Filter] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InputError(f"{key} takes a non-empty list of filters")
            items.append(Filter(key[1:], tuple(_parse_object(v, depth + 1, counter) for v in value)))
        elif isinstance(key, str) and key.startswith("$"):
            raise InputError(f"unknown filter operator {key!r} at the top level (use $and, $or or a field name)")
        else:
            items.extend(_field_conditions(_path(key), value))
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise InputError(f"the filter has more than {MAX_CONDITIONS} conditions")
    return Filter("and", tuple(items))


def _path(key: Any) -> tuple[str, ...]:
    parts = tuple(str(key).split("."))
    if not isinstance(key, str) or not all(_PART.fullmatch(p) for p in parts):
        raise InputError(f"invalid filter field {key!r}: use names of letters, digits and _ joined by dots")
    return parts


def _field_conditions(path: tuple[str, ...], value: Any) -> list[Condition]:
    field_name = ".".join(path)
    if not isinstance(value, Mapping):
        return [Condition(path, "$eq", _scalar(value, field_name))]
    if not value:
        raise InputError(f"filter field {field_name!r} has an empty operator object")
    out = []
    for op, operand in value.items():
        if op not in OPS:
            raise InputError(f"unknown filter operator {op!r} for {field_name!r} (use {', '.join(OPS)})")
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or not 1 <= len(operand) <= MAX_IN_VALUES:
                raise InputError(f"{op} for {field_name!r} takes a list of 1 to {MAX_IN_VALUES} values")
            out.append(Condition(path, op, tuple(_scalar(v, field_name) for v in operand)))
            continue
        scalar = _scalar(operand, field_name)
        if op in RANGE_OPS and isinstance(scalar, bool):
            raise InputError(f"{op} for {field_name!r} compares numbers or strings, not booleans")
        out.append(Condition(path, op, scalar))
    return out


def _scalar(value: Any, field_name: str) -> Scalar:
    if isinstance(value, str):
        return check_encodable(value, f"the filter value for {field_name!r}")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InputError(f"filter value for {field_name!r} is outside the 64-bit integer range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"filter value for {field_name!r} must be a finite number")
        return value
    raise InputError(f"filter value for {field_name!r} must be a string, number or boolean, "
                     f"not {type(value).__name__}")


# ---------------------------------------------------------------- SQLite

_NUMERIC_TYPES = "('integer', 'real', 'true', 'false')"


def to_sql(filt: Filter, column: str) -> tuple[str, list[Any]]:
    """A WHERE clause over the JSON text in `column`, and its parameters."""
    if not filt.items:
        return "1", []
    parts, params = [], []
    for item in filt.items:
        sql, item_params = to_sql(item, column) if isinstance(item, Filter) else _condition_sql(item, column)
        parts.append(f"({sql})")
        params.extend(item_params)
    return f" {filt.combine.upper()} ".join(parts), params


def _json_path(path: tuple[str, ...]) -> str:
    return "$." + ".".join(path)


def _equal_sql(column: str, path: str, value: Scalar) -> tuple[str, list[Any]]:
    # json_extract gives 1/0 for true/false, so booleans and numbers compare as Milvus does.
    kinds = "('text')" if isinstance(value, str) else _NUMERIC_TYPES
    return (f"json_type({column}, ?) IN {kinds} AND json_extract({column}, ?) = ?",
            [path, path, int(value) if isinstance(value, bool) else value])


def _condition_sql(cond: Condition, column: str) -> tuple[str, list[Any]]:
    path = _json_path(cond.path)
    present = f"json_type({column}, ?) NOT IN ('null')"  # NULL (missing) fails NOT IN as well
    if cond.op in RANGE_OPS:
        kinds = "('text')" if isinstance(cond.value, str) else _NUMERIC_TYPES
        return (f"json_type({column}, ?) IN {kinds} AND json_extract({column}, ?) {RANGE_OPS[cond.op]} ?",
                [path, path, cond.value])
    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    any_equal, params = _equal_sql(column, path, values[0]) if len(values) == 1 else _in_sql(column, path, values)
    if cond.op in ("$eq", "$in"):
        return any_equal, params
    return f"{present} AND NOT ({any_equal})", [path, *params]  # $ne, $nin


def _in_sql(column: str, path: str, values: tuple[Scalar, ...]) -> tuple[str, list[Any]]:
    """One membership test per kind of value, each over one JSON-array parameter (json_each): a
    thousand values stay one parameter and a flat expression (an OR per value nests too deep)."""
    strings = [v for v in values if isinstance(v, str)]
    numbers = [int(v) if isinstance(v, bool) else v for v in values if not isinstance(v, str)]
    parts, params = [], []
    for group, kinds in ((strings, "('text')"), (numbers, _NUMERIC_TYPES)):
        if group:
            parts.append(f"(json_type({column}, ?) IN {kinds} AND json_extract({column}, ?) IN "
                         "(SELECT value FROM json_each(?)))")
            params += [path, path, json.dumps(group, ensure_ascii=False)]
    return " OR ".join(parts), params


# ---------------------------------------------------------------- Milvus


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # Milvus strings: "..." with \" \\ \n escapes
    return repr(value)


def to_milvus(filt: Filter, field_name: str = "meta") -> str:
    """A Milvus boolean expression over the JSON field `field_name`."""
    parts = []
    for item in filt.items:
        parts.append(to_milvus(item, field_name) if isinstance(item, Filter) else _condition_milvus(item, field_name))
    return "(" + f" {filt.combine} ".join(f"({p})" for p in parts) + ")" if parts else ""


def _condition_milvus(cond: Condition, field_name: str) -> str:
    ref = field_name + "".join(f'["{part}"]' for part in cond.path)
    if cond.op in RANGE_OPS:
        return f"{ref} {RANGE_OPS[cond.op]} {_literal(cond.value)}"  # type: ignore[arg-type]
    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    # This Milvus has no `in` over JSON keys: spell it out. Its != already means "present and different".
    if cond.op in ("$eq", "$in"):
        return " or ".join(f"{ref} == {_literal(v)}" for v in values)
    return " and ".join(f"{ref} != {_literal(v)}" for v in values)
