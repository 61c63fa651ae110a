"""Avro schema documents to one expanded, bounded tree the registry reasons about.

fastavro's ``parse_schema`` checks the document (types, defaults, enum symbols); the tree is
then rebuilt with every named-type reference inlined, in this shape:

    {"type": "null"|"boolean"|"int"|"long"|"float"|"double"|"bytes"|"string"}
    {"type": "record", "name", "aliases", "fields": [{"name", "type", "has_default",
        "default", "aliases", "tag"}]}
    {"type": "enum", "name", "aliases", "symbols", "default"?}
    {"type": "fixed", "name", "aliases", "size"}
    {"type": "array", "items"}   {"type": "map", "values"}   {"type": "union", "branches"}

Recursive types are refused (like ``$ref`` cycles in JSON Schema): every later step can then
walk the tree without cycle handling, and the expansion is bounded in depth and node count.
The root must be a record (event data is an object); ``x-eventward-max-bytes`` sits on it.
Strings and bytes are bounded to 4096 characters, arrays and maps to 1000 entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import fastavro

from eventward._internal.guard.modes import GUARD_KEY, check_guard
from eventward._internal.schema.json_schema import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_BYTES_KEY,
    MAX_NODES,
    MAX_SCHEMA_DEPTH,
    TAG_KEY,
    check_max_bytes,
)
from eventward.errors import SchemaError, SchemaSecurityError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class NormalizedAvro:
    tree: dict[str, Any]
    max_event_bytes: int


def normalize(doc: dict[str, Any]) -> NormalizedAvro:
    if doc.get("type") not in ("record", "error"):
        raise SchemaError("$: the root Avro schema must be a record (event data is an object)")
    max_bytes = check_max_bytes(doc.get(MAX_BYTES_KEY, DEFAULT_MAX_EVENT_BYTES))
    check_guard(doc.get(GUARD_KEY))
    try:
        parsed = fastavro.parse_schema(doc)
    except Exception as e:  # fastavro raises several unrelated types for bad schemas
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise SchemaError(f"invalid Avro schema: {detail}") from None
    named = parsed.get("__named_schemas", {})
    return NormalizedAvro(_Expander(named).node(parsed, "$", 0), max_bytes)


def short(name: str) -> str:
    """The unqualified part of a full name (schema resolution compares these)."""
    return name.rsplit(".", 1)[-1]


def _aliases(value: object, at: str) -> list[str]:
    """fastavro does not check aliases; a non-list or a non-string alias is refused here."""
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise SchemaError(f"{at}: aliases must be a list of names")
    return value


class _Expander:
    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.stack: list[str] = []
        self.nodes = 0

    def node(self, s: Any, at: str, depth: int) -> dict[str, Any]:
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaSecurityError(f"{at}: schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaSecurityError(f"schema expands to more than {MAX_NODES} nodes (at {at})")
        if isinstance(s, list):
            branches = [self.node(b, at, depth) for b in s]
            if any(b["type"] == "union" for b in branches):
                raise SchemaError(f"{at}: a union may not contain a union directly (Avro specification)")
            return {"type": "union", "branches": branches}
        if isinstance(s, str):
            if s in PRIMITIVES:
                return {"type": s}
            if s in self.stack:
                raise SchemaSecurityError(f"{at}: recursive Avro type {short(s)!r} is not supported")
            if s not in self.named:
                raise SchemaError(f"{at}: unknown Avro type {s[:80]!r}")
            return self.node(self.named[s], at, depth)
        if not isinstance(s, dict):
            raise SchemaError(f"{at}: an Avro schema must be a name, a list or an object")
        if TAG_KEY in s:
            raise SchemaError(f"{at}: x-eventward belongs on a record field, not on a type")
        t = s.get("type")
        if not isinstance(t, str):
            return self.node(t, at, depth)
        if t in PRIMITIVES:
            return {"type": t}
        if t == "array":
            return {"type": "array", "items": self.node(s["items"], f"{at}[]", depth + 1)}
        if t == "map":
            return {"type": "map", "values": self.node(s["values"], f"{at}.*", depth + 1)}
        if t not in NAMED:
            return self.node(t, at, depth)
        name = s["name"]
        if name in self.stack:
            raise SchemaSecurityError(f"{at}: recursive Avro type {short(name)!r} is not supported")
        for part in name.split("."):
            if not _NAME.match(part):
                raise SchemaError(f"{at}: Avro name {name[:80]!r} is not valid")
        base = {"name": name, "aliases": [short(a) for a in _aliases(s.get("aliases", []), at)]}
        if t == "enum":
            if not isinstance(s.get("symbols"), list):
                raise SchemaError(f"{at}: enum symbols must be a list of names")
            out = {"type": "enum", **base, "symbols": list(s["symbols"])}
            for sym in out["symbols"]:
                if not isinstance(sym, str) or not _NAME.match(sym):
                    raise SchemaError(f"{at}: enum symbol {str(sym)[:40]!r} is not a valid Avro name")
            if "default" in s:
                out["default"] = s["default"]
            return out
        if t == "fixed":
            return {"type": "fixed", **base, "size": s["size"]}
        self.stack.append(name)
        try:
            return {"type": "record", **base, "fields": self.fields(s.get("fields", []), at, depth)}
        finally:
            self.stack.pop()

    def fields(self, fields: list[dict[str, Any]], at: str, depth: int) -> list[dict[str, Any]]:
        out, seen = [], set()
        for f in fields:
            name = f["name"]
            if not isinstance(name, str) or not _NAME.match(name):
                raise SchemaError(f"{at}: field name {str(name)[:40]!r} is not a valid Avro name")
            if name in seen:
                raise SchemaError(f"{at}.{name}: field declared twice")
            seen.add(name)
            out.append(
                {
                    "name": name,
                    "type": self.node(f["type"], f"{at}.{name}", depth + 1),
                    "has_default": "default" in f,
                    "default": f.get("default"),
                    "aliases": list(_aliases(f.get("aliases", []), f"{at}.{name}")),
                    "tag": f.get(TAG_KEY),
                }
            )
        return out
