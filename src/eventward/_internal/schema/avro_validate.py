"""Validate JSON event data against a normalized Avro tree: strict, bounded, value-free errors.

fastavro's own ``validate`` ignores unknown record fields and puts the offending value in its
message, so the registry compiles the tree into a chain of small closures instead. Records
are closed (unknown fields refused); a missing field is allowed only if it has a default;
numbers are range-checked for int/long; bytes and fixed accept ``bytes`` or ``str`` (Avro's
JSON encoding); unions pick a branch by the value's JSON kind. Map keys come from the data,
so error paths show them as ``*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventward._internal.schema.json_schema import DEFAULT_MAX_ITEMS, DEFAULT_MAX_LENGTH
from eventward.errors import ValidationError

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

Checker = Callable[[Any], None]


class _Invalid(Exception):
    """Internal: raised deep in the checker chain, path segments collected while unwinding."""

    def __init__(self, rule: str, segment: str | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        self.segments = [] if segment is None else [segment]


def compile_avro(tree: dict[str, Any]) -> Callable[[Any], ValidationError | None]:
    """A function returning None for valid data, else a ValidationError (never raising)."""
    checker = _compile(tree)

    def check(data: Any) -> ValidationError | None:
        try:
            checker(data)
        except _Invalid as e:
            path = "$" + "".join(reversed(e.segments))
            return ValidationError(f"{path}: {e.rule}", path=path, rule=e.rule)
        return None

    return check


def _kind(v: Any) -> str:
    """The JSON kind of a value, for picking a union branch."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str | bytes):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else "other"


_BRANCH_KIND = {
    "null": "null",
    "boolean": "boolean",
    "int": "number",
    "long": "number",
    "float": "number",
    "double": "number",
    "string": "string",
    "bytes": "string",
    "enum": "string",
    "fixed": "string",
    "array": "array",
    "map": "object",
    "record": "object",
}


def _compile(node: dict[str, Any]) -> Checker:
    t = node["type"]
    if t == "record":
        return _record(node)
    if t == "union":
        return _union(node)
    if t == "array":
        return _array(_compile(node["items"]))
    if t == "map":
        return _map(_compile(node["values"]))
    if t == "enum":
        return _enum(frozenset(node["symbols"]))
    if t == "fixed":
        return _fixed(node["size"])
    return _PRIMITIVES[t]


def _record(node: dict[str, Any]) -> Checker:
    fields = [(f["name"], _compile(f["type"]), f["has_default"]) for f in node["fields"]]
    names = frozenset(name for name, _, _ in fields)

    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise _Invalid("type")
        for name, chk, has_default in fields:
            if name in v:
                try:
                    chk(v[name])
                except _Invalid as e:
                    e.segments.append(f".{name}")
                    raise
            elif not has_default:
                raise _Invalid("required", f".{name}")
        if not names.issuperset(v):
            raise _Invalid("additionalProperties")

    return check


def _union(node: dict[str, Any]) -> Checker:
    by_kind: dict[str, list[Checker]] = {}
    for br in node["branches"]:
        by_kind.setdefault(_BRANCH_KIND[br["type"]], []).append(_compile(br))

    def check(v: Any) -> None:
        candidates = by_kind.get(_kind(v))
        if not candidates:
            raise _Invalid("type")
        if len(candidates) == 1:
            candidates[0](v)  # one possible branch: its error is the precise one
            return
        for chk in candidates:
            try:
                chk(v)
                return
            except _Invalid:
                continue
        raise _Invalid("union")

    return check


def _array(items: Checker) -> Checker:
    def check(v: Any) -> None:
        if not isinstance(v, list):
            raise _Invalid("type")
        if len(v) > DEFAULT_MAX_ITEMS:
            raise _Invalid("maxItems")
        for i, x in enumerate(v):
            try:
                items(x)
            except _Invalid as e:
                e.segments.append(f"[{i}]")
                raise

    return check


def _map(values: Checker) -> Checker:
    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise _Invalid("type")
        if len(v) > DEFAULT_MAX_ITEMS:
            raise _Invalid("maxProperties")
        for k, x in v.items():
            if type(k) is not str or len(k) > DEFAULT_MAX_LENGTH:
                raise _Invalid("propertyNames")
            try:
                values(x)
            except _Invalid as e:
                e.segments.append(".*")  # the key is data
                raise

    return check


def _enum(symbols: frozenset[str]) -> Checker:
    def check(v: Any) -> None:
        if type(v) is not str or v not in symbols:
            raise _Invalid("enum")

    return check


def _fixed(size: int) -> Checker:
    def check(v: Any) -> None:
        if not isinstance(v, str | bytes):
            raise _Invalid("type")
        if len(v) != size:
            raise _Invalid("size")

    return check


def _integer(lo: int, hi: int) -> Checker:
    def check(v: Any) -> None:
        if type(v) is not int:
            raise _Invalid("type")
        if not lo <= v <= hi:
            raise _Invalid("range")

    return check


def _number(v: Any) -> None:
    if type(v) is not float and type(v) is not int:
        raise _Invalid("type")


def _string(v: Any) -> None:
    if type(v) is not str:
        raise _Invalid("type")
    if len(v) > DEFAULT_MAX_LENGTH:
        raise _Invalid("maxLength")


def _bytes(v: Any) -> None:
    if not isinstance(v, str | bytes):
        raise _Invalid("type")
    if len(v) > DEFAULT_MAX_LENGTH:
        raise _Invalid("maxLength")


def _null(v: Any) -> None:
    if v is not None:
        raise _Invalid("type")


def _boolean(v: Any) -> None:
    if type(v) is not bool:
        raise _Invalid("type")


_PRIMITIVES: dict[str, Checker] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer(*_INT32),
    "long": _integer(*_INT64),
    "float": _number,
    "double": _number,
    "string": _string,
    "bytes": _bytes,
}
