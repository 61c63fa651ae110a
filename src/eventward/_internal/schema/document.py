"""Loading a schema document safely: size and shape are bounded before anything walks it.

A schema is attacker-controlled input to the registry (anyone allowed to propose can send
one), so the raw bytes are checked first: size, then a strict parse by orjson (C, refuses
nesting deeper than 1024 without recursing in Python), then one linear scan of the bytes
for nesting depth and duplicate object keys. Duplicate keys are refused because parsers
disagree on which one wins, and a schema that means different things to different tools
is a smuggling channel.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from eventward.errors import SchemaError, SchemaSecurityError

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_JSON_DEPTH = 64  # raw JSON containers; a schema level is about two of them
FORMATS = ("json", "avro")

# Valid JSON only reaches this scanner, so every string token terminates and the scan is linear.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]', re.DOTALL)


def load(document: bytes | bytearray | str | Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """(exact bytes, parsed object) of a schema document, or a typed refusal."""
    if isinstance(document, Mapping):
        try:
            raw = orjson.dumps(document)
        except (TypeError, orjson.JSONEncodeError):
            raise SchemaError("schema document is not JSON-serialisable (or nested too deeply)") from None
    elif isinstance(document, str):
        raw = document.encode("utf-8")
    elif isinstance(document, bytes | bytearray):
        raw = bytes(document)
    else:
        raise SchemaError("schema document must be JSON bytes, text or a mapping")
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise SchemaSecurityError(
            f"schema document is {len(raw)} bytes, limit is {MAX_DOCUMENT_BYTES}",
            size=len(raw),
            limit=MAX_DOCUMENT_BYTES,
        )
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth" in str(e) or "recursion" in str(e):
            raise SchemaSecurityError(f"schema document nests deeper than {MAX_JSON_DEPTH} levels") from None
        raise SchemaError(f"schema document is not valid JSON (at byte {e.pos})") from None
    scan(raw)
    if not isinstance(parsed, dict):
        raise SchemaError("schema document must be a JSON object")
    return raw, parsed


def scan(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and duplicate keys; ``raw`` must be valid JSON."""
    stack: list[set[bytes] | None] = []  # a key set per open object, None per open array
    expect_key = False
    for m in _TOKEN.finditer(raw):
        tok = m.group()
        c = tok[:1]
        if c == b'"':
            if expect_key:
                keys = stack[-1]
                assert keys is not None
                key = tok if b"\\" not in tok else orjson.dumps(orjson.loads(tok))
                if key in keys:
                    name = orjson.loads(key)[:64]
                    raise SchemaError(
                        f"schema document repeats the key {name!r} in one object (at byte {m.start()})"
                    )
                keys.add(key)
                expect_key = False
        elif c in b"{[":
            if len(stack) >= MAX_JSON_DEPTH:
                raise SchemaSecurityError(f"schema document nests deeper than {MAX_JSON_DEPTH} levels")
            stack.append(set() if c == b"{" else None)
            expect_key = c == b"{"
        elif c in b"}]":
            stack.pop()
            expect_key = False
        elif c == b",":
            expect_key = bool(stack) and stack[-1] is not None


def canonical(parsed: Any) -> bytes:
    """Whitespace- and key-order-independent bytes: what the fingerprint covers."""
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)


def fingerprint(fmt: str, parsed: Any) -> str:
    """SHA-256 over the format and the canonical document, as ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(fmt.encode() + b"\x00" + canonical(parsed)).hexdigest()


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SchemaError(f"unknown schema format {str(fmt)[:20]!r} (expected one of {', '.join(FORMATS)})")
    return fmt
