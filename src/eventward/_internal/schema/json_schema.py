"""JSON Schema documents to one closed, self-contained, bounded tree the registry reasons about.

Strict by default, decided here once for every later step (validation, tags, compatibility,
security diff), all of which work on the normalized tree, never on the raw document:

- Only a known keyword subset is accepted (the registry must be able to reason about every
  keyword for its compatibility and security checks; an unknown keyword, such as a typo of
  ``maxLength``, would silently switch a check off). Combinators (``oneOf``/``anyOf``/
  ``allOf``/``not``/``if``), tuple ``items`` and remote references are refused.
- Every schema has a ``type`` (or an ``enum``/``const``); arrays declare ``items``.
- ``additionalProperties`` absent on an object means ``false``: it is rewritten into the
  normalized copy. ``true`` must be written explicitly (and loosening to it is a security
  finding).
- Strings without ``maxLength`` get 4096, arrays without ``maxItems`` get 1000.
- A schema with an ``enum`` or ``const`` gets no object or array defaults (closed objects,
  required ``items``, ``maxItems``): the listed values bound it exactly, and a closed-object
  default would make an object value unsatisfiable. Its strings keep a ``maxLength`` that
  admits every listed string.
- ``$ref`` is resolved here (local ``#/$defs/...`` and ``#/definitions/...`` only) and inlined;
  reference cycles are refused and the expansion is bounded in depth and node count.
  Validation keywords next to a ``$ref`` are refused (draft-07 ignores them, 2020-12 applies
  them: ambiguous); annotations, including ``x-eventward``, are allowed there.
- Every ``pattern`` and ``patternProperties`` key must be RE2-compatible (see regex.py).

Drafts: draft-07 and 2020-12 are accepted (``$schema`` absent means 2020-12). For this subset
they mean the same thing, so one validator serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from eventward._internal.guard.modes import GUARD_KEY, check_guard
from eventward._internal.schema.document import canonical
from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.regex import Matcher, compile_pattern
from eventward.errors import SchemaError, SchemaSecurityError

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_DRAFTS = {
    "http://json-schema.org/draft-07/schema#": DRAFT_07,
    "http://json-schema.org/draft-07/schema": DRAFT_07,
    "https://json-schema.org/draft/2020-12/schema": DRAFT_2020_12,
    "https://json-schema.org/draft/2020-12/schema#": DRAFT_2020_12,
}

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
HARD_MAX_EVENT_BYTES = 1024 * 1024
DEFAULT_MAX_LENGTH = 4096
DEFAULT_MAX_ITEMS = 1000
MAX_SCHEMA_DEPTH = 32
MAX_NODES = 2000  # after $ref expansion; compiling costs about 0.3 ms per node
MAX_REF_CHAIN = 32
MAX_ENUM = 1000
MAX_NAME_CHARS = 256
MAX_BYTES_KEY = "x-eventward-max-bytes"
TAG_KEY = "x-eventward"

TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
ALL_TYPES = TYPES
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "$comment",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        TAG_KEY,
    }
)
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "pattern",
        "format",
        "items",
        "uniqueItems",
        *_COUNTS,
        *_NUMBERS,
    }
)
_ROOT_ONLY = frozenset({"$schema", "$id", "$defs", "definitions", MAX_BYTES_KEY, GUARD_KEY})
_UNSUPPORTED_HINT = {
    "oneOf": "combinators are not supported; use a type list for nullable fields",
    "anyOf": "combinators are not supported; use a type list for nullable fields",
    "allOf": "combinators are not supported",
    "not": "combinators are not supported",
    "if": "conditionals are not supported",
    "prefixItems": "tuple arrays are not supported",
    "$dynamicRef": "dynamic references are not supported",
    "$recursiveRef": "recursive references are not supported",
}


@dataclass(frozen=True)
class NormalizedJson:
    """The normalized tree plus what was learned while building it."""

    tree: dict[str, Any]
    draft: str
    max_event_bytes: int
    names: frozenset[str]  # every property name: the only object keys error paths may show
    patterns: dict[str, Matcher]  # every pattern, compiled for linear-time matching


def normalize(doc: dict[str, Any], *, strict_defaults: bool = True) -> NormalizedJson:
    """Check and normalize a parsed JSON Schema document (see the module docstring).

    ``strict_defaults=False`` is for running the JSON Schema test suite only (see
    docs/CONFORMANCE.md): the same keyword checks, but none of the strict defaults (closed
    objects, default bounds, a required ``type``, ``items`` and an object root), so a suite
    schema means what the specification says. The registry never uses it.
    """
    draft = doc.get("$schema", DRAFT_2020_12)
    if not isinstance(draft, str) or draft not in _DRAFTS:
        shown = draft[:80] if isinstance(draft, str) else f"a {_json_type(draft)}"
        raise SchemaError(f"$schema {shown!r} is not supported (use draft-07 or 2020-12)")
    check_guard(doc.get(GUARD_KEY))
    n = _Normalizer(doc, strict_defaults)
    tree = n.node(doc, "$", 0)
    if strict_defaults and types_of(tree) != {"object"}:
        raise SchemaError('$: the root schema must have type "object" (event data is a JSON object)')
    for key in ("$defs", "definitions"):
        defs = doc.get(key, {})
        if not isinstance(defs, dict):
            raise SchemaError(f"{key} must map names to schemas")
        for name, sub in defs.items():  # unused definitions are checked too: other tools read them
            n.node(sub, f"#/{key}/{name}", 1)
    return NormalizedJson(tree, _DRAFTS[draft], _max_bytes(doc), frozenset(n.names), n.patterns)


def _max_bytes(doc: dict[str, Any]) -> int:
    value = doc.get(MAX_BYTES_KEY, DEFAULT_MAX_EVENT_BYTES)
    return check_max_bytes(value)


def check_max_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(f"$: {MAX_BYTES_KEY} must be a positive integer")
    if value > HARD_MAX_EVENT_BYTES:
        raise SchemaSecurityError(
            f"$: {MAX_BYTES_KEY} {value} exceeds the hard cap of {HARD_MAX_EVENT_BYTES} bytes"
        )
    return value


def types_of(node: dict[str, Any]) -> frozenset[str]:
    """The JSON types a normalized node admits (from ``type``, else from its enum/const values)."""
    t = node.get("type")
    if isinstance(t, str):
        return frozenset((t,))
    if isinstance(t, list):
        return frozenset(t)
    values = enum_of(node)
    if values is None:
        return ALL_TYPES
    return frozenset(_json_type(v) for v in values)


def enum_of(node: dict[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    return node.get("enum")


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def json_key(v: Any) -> bytes:
    """Equality key for JSON values (``1`` and ``True`` differ, as in JSON)."""
    return canonical(v)


class _Normalizer:
    def __init__(self, root: dict[str, Any], strict_defaults: bool = True) -> None:
        self.root = root
        self.strict = strict_defaults
        self.nodes = 0
        self.refs: list[str] = []
        self.names: set[str] = set()
        self.patterns: dict[str, Matcher] = {}

    def node(self, s: Any, at: str, depth: int) -> dict[str, Any]:
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaSecurityError(f"{at}: schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaSecurityError(f"schema expands to more than {MAX_NODES} nodes (at {at})")
        if not isinstance(s, dict):
            raise SchemaError(f"{at}: a schema must be a JSON object (boolean schemas are not supported)")
        if "$ref" in s:
            return self.ref(s, at, depth)
        allowed = _KEYWORDS | _ANNOTATIONS | (_ROOT_ONLY if depth == 0 else frozenset())
        for key in s:
            if key not in allowed:
                hint = _UNSUPPORTED_HINT.get(key, "not in the supported keyword set")
                if key in _ROOT_ONLY:
                    hint = "allowed only at the root"
                raise SchemaError(f"{at}: keyword {str(key)[:40]!r} is not supported ({hint})")
        out: dict[str, Any] = {}
        if TAG_KEY in s:
            out[TAG_KEY] = s[TAG_KEY]
        self.scalars(s, at, out)
        types = types_of(out)
        defaults = self.strict and "enum" not in out  # enumerated values are their own bound
        if "properties" in s:
            out["properties"] = self.properties(s["properties"], at, depth)
        if "patternProperties" in s:
            out["patternProperties"] = self.pattern_properties(s["patternProperties"], at, depth)
        if "required" in s:
            out["required"] = self.required(s["required"], at)
        if "object" in types:
            add = s.get("additionalProperties", False if defaults else None)
            if isinstance(add, dict):
                add = self.node(add, f"{at}.*", depth + 1)
            elif add is not None and not isinstance(add, bool):
                raise SchemaError(f"{at}: additionalProperties must be a boolean or a schema")
            if add is not None:
                out["additionalProperties"] = add
            if add is False:
                self.check_required_possible(out, at)
        elif "additionalProperties" in s:
            raise SchemaError(f"{at}: additionalProperties on a schema that does not admit objects")
        if "array" in types and ("items" in s or defaults):
            if "items" not in s:
                raise SchemaError(f"{at}: an array schema must declare items")
            if isinstance(s["items"], list):
                raise SchemaError(f"{at}: items must be one schema (tuple arrays are not supported)")
            out["items"] = self.node(s["items"], f"{at}[]", depth + 1)
            if defaults:
                out.setdefault("maxItems", DEFAULT_MAX_ITEMS)
        elif "items" in s:
            raise SchemaError(f"{at}: items on a schema that does not admit arrays")
        if "string" in types and self.strict:
            listed = [len(v) for v in out.get("enum", ()) if isinstance(v, str)]
            out.setdefault("maxLength", max([DEFAULT_MAX_LENGTH, *listed]))
        return out

    def ref(self, s: dict[str, Any], at: str, depth: int) -> dict[str, Any]:
        ref = s["$ref"]
        if not isinstance(ref, str):
            raise SchemaError(f"{at}: $ref must be a string")
        beside = sorted(k for k in s if k != "$ref" and k not in _ANNOTATIONS)
        if beside:
            raise SchemaError(
                f"{at}: keywords next to $ref are not supported ({', '.join(map(str, beside))[:80]}); "
                "move them into the referenced schema"
            )
        if not ref.startswith("#"):
            raise SchemaSecurityError(
                f"{at}: remote $ref {ref[:80]!r} refused (only local #/$defs/... references)"
            )
        if ref in self.refs or ref in ("#", "#/"):
            chain = " -> ".join([*self.refs, ref])
            raise SchemaSecurityError(f"{at}: $ref cycle ({chain[:200]})")
        if len(self.refs) >= MAX_REF_CHAIN:
            raise SchemaSecurityError(f"{at}: $ref chain longer than {MAX_REF_CHAIN}")
        target = self.resolve(ref, at)
        self.refs.append(ref)
        try:
            out = self.node(target, at, depth)
        finally:
            self.refs.pop()
        if TAG_KEY in s:
            if TAG_KEY in out:
                raise SchemaError(f"{at}: x-eventward given both next to $ref and in {ref[:80]}")
            out = {**out, TAG_KEY: s[TAG_KEY]}
        return out

    def resolve(self, ref: str, at: str) -> Any:
        parts = ref[2:].split("/") if ref.startswith("#/") else []
        if len(parts) < 2 or parts[0] not in ("$defs", "definitions"):
            raise SchemaError(f"{at}: $ref {ref[:80]!r} must point into #/$defs or #/definitions")
        cur: Any = self.root
        for raw in parts:
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(cur, dict) or part not in cur:
                raise SchemaError(f"{at}: $ref {ref[:80]!r} does not resolve")
            cur = cur[part]
        return cur

    def scalars(self, s: dict[str, Any], at: str, out: dict[str, Any]) -> None:
        if "type" in s:
            t = s["type"]
            ok = (isinstance(t, str) and t in TYPES) or (
                isinstance(t, list)
                and t
                and all(isinstance(x, str) and x in TYPES for x in t)
                and len(set(t)) == len(t)
            )
            if not ok:
                raise SchemaError(
                    f"{at}: type must be one of {sorted(TYPES)} or a list of them without repeats"
                )
            out["type"] = t if isinstance(t, str) else sorted(t)
        if "enum" in s:
            e = s["enum"]
            if not isinstance(e, list) or not 1 <= len(e) <= MAX_ENUM:
                raise SchemaError(f"{at}: enum must be a list of 1..{MAX_ENUM} values")
            if len({json_key(v) for v in e}) != len(e):
                raise SchemaError(f"{at}: enum values must be unique")
            out["enum"] = e
        if "const" in s:
            if "enum" in out:
                raise SchemaError(f"{at}: use either const or enum")
            out["enum"] = [s["const"]]  # one keyword to reason about (and fastjsonschema mishandles const)
        if "type" not in out and "enum" not in out and self.strict:
            raise SchemaError(f"{at}: every schema needs a type (or an enum/const)")
        for key in _COUNTS:
            if key in s:
                v = s[key]
                if isinstance(v, float) and v.is_integer():
                    v = int(v)  # JSON Schema: 2.0 is the integer 2
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 2**31:
                    raise SchemaError(f"{at}: {key} must be a non-negative integer")
                out[key] = v
        for key in _NUMBERS:
            if key in s:
                v = s[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise SchemaError(f"{at}: {key} must be a finite number")
                if key == "multipleOf" and v <= 0:
                    raise SchemaError(f"{at}: multipleOf must be greater than 0")
                out[key] = v
        for lo, hi in (
            ("minLength", "maxLength"),
            ("minItems", "maxItems"),
            ("minProperties", "maxProperties"),
        ):
            if lo in out and hi in out and out[lo] > out[hi]:
                raise SchemaError(f"{at}: {lo} is greater than {hi}")
        if "pattern" in s:
            self.patterns[s["pattern"]] = compile_pattern(s["pattern"], at)
            out["pattern"] = s["pattern"]
        if "format" in s:
            f = s["format"]
            if not isinstance(f, str) or f not in FORMATS:
                shown = f[:40] if isinstance(f, str) else f"a {_json_type(f)}"
                raise SchemaError(f"{at}: format {shown!r} is not supported (use one of {sorted(FORMATS)})")
            out["format"] = f
        if "uniqueItems" in s:
            if not isinstance(s["uniqueItems"], bool):
                raise SchemaError(f"{at}: uniqueItems must be a boolean")
            out["uniqueItems"] = s["uniqueItems"]

    def properties(self, props: Any, at: str, depth: int) -> dict[str, Any]:
        if not isinstance(props, dict):
            raise SchemaError(f"{at}: properties must map names to schemas")
        out = {}
        for name, sub in props.items():
            if not 1 <= len(name) <= MAX_NAME_CHARS:
                raise SchemaError(f"{at}: property names must be 1..{MAX_NAME_CHARS} characters")
            self.names.add(name)
            out[name] = self.node(sub, f"{at}.{name}", depth + 1)
        return out

    def pattern_properties(self, props: Any, at: str, depth: int) -> dict[str, Any]:
        if not isinstance(props, dict):
            raise SchemaError(f"{at}: patternProperties must map patterns to schemas")
        out = {}
        for pattern, sub in props.items():
            self.patterns[pattern] = compile_pattern(pattern, f"{at} patternProperties")
            out[pattern] = self.node(sub, f"{at}.*", depth + 1)
        return out

    def required(self, req: Any, at: str) -> list[str]:
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req) or len(set(req)) != len(req):
            raise SchemaError(f"{at}: required must be a list of unique property names")
        return req

    def check_required_possible(self, out: dict[str, Any], at: str) -> None:
        props = out.get("properties", {})
        pats = [self.patterns[p] for p in out.get("patternProperties", {})]
        for name in out.get("required", ()):
            if name not in props and not any(p.search(name) for p in pats):
                raise SchemaError(
                    f"{at}.{name}: required but not declared in properties (unknown fields are refused)"
                )
