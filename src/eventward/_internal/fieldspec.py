"""Which fields of an event are sensitive, their class, and which field names the data subject.

The schema registry derives a FieldSpec from ``x-eventward`` tags; code never hard-codes
field names. Paths are dotted names with ``[]`` for "every item of this array":
``customer.email``, ``items[].name``, ``tags[]``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eventward.errors import FieldSpecError

_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\[\])?$")
_CLASS = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")


def parse_path(path: str) -> tuple[tuple[str, bool], ...]:
    """Split ``items[].name`` into ``(("items", True), ("name", False))``. Memoised (bounded; the
    result is immutable): ``subject_of`` parses its spec's subject path on every call."""
    if not isinstance(path, str):
        raise FieldSpecError("field path must be 1..256 characters")
    return _parse_path(str(path))


@functools.lru_cache(maxsize=1024)
def _parse_path(path: str) -> tuple[tuple[str, bool], ...]:
    if not path or len(path) > 256:
        raise FieldSpecError("field path must be 1..256 characters")
    out = []
    for seg in path.split("."):
        if not _SEGMENT.match(seg):
            raise FieldSpecError(f"invalid field path segment in {path!r}")
        is_array = seg.endswith("[]")
        out.append((seg[:-2] if is_array else seg, is_array))
    return tuple(out)


def check_class(name: str) -> str:
    if not _CLASS.match(name):
        raise FieldSpecError(f"invalid sensitivity class name {name!r} (lowercase, 1..32 chars)")
    return name


@dataclass(frozen=True)
class FieldRule:
    """One sensitive path. ``deterministic`` selects AES-SIV for equality search."""

    path: str
    cls: str
    deterministic: bool = False
    segments: tuple[tuple[str, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", parse_path(self.path))
        check_class(self.cls)


@dataclass(frozen=True)
class Target:
    """A concrete occurrence of a sensitive value: ``path`` has array indexes filled in."""

    path: str
    container: Any  # dict or list that holds the value
    key: Any  # str key or int index
    rule: FieldRule


@dataclass(frozen=True)
class FieldSpec:
    rules: tuple[FieldRule, ...] = ()
    subject_path: str | None = None

    def __post_init__(self) -> None:
        if self.subject_path is not None:
            segs = parse_path(self.subject_path)
            if any(is_array for _, is_array in segs):
                raise FieldSpecError("the data-subject path cannot go through an array")
        seen: set[str] = set()
        for r in self.rules:
            if r.path in seen:
                raise FieldSpecError(f"field path {r.path!r} tagged twice")
            seen.add(r.path)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FieldSpec:
        """``{"subject": "customer.id", "fields": {"customer.email": "pii", "x": {"class": "pii",
        "deterministic": true}}}``."""
        fields = doc.get("fields", {})
        if not isinstance(fields, dict):
            raise FieldSpecError("'fields' must map paths to classes")
        rules = []
        for path, v in fields.items():
            if isinstance(v, str):
                rules.append(FieldRule(path, v))
            elif isinstance(v, dict) and isinstance(v.get("class"), str):
                rules.append(FieldRule(path, v["class"], bool(v.get("deterministic", False))))
            else:
                raise FieldSpecError(f"field {path!r}: expected a class name or {{'class': ...}}")
        subject = doc.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise FieldSpecError("'subject' must be a field path")
        return cls(tuple(rules), subject)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject_path,
            "fields": {
                r.path: ({"class": r.cls, "deterministic": True} if r.deterministic else r.cls)
                for r in self.rules
            },
        }

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(r.cls for r in self.rules)

    def subject_of(self, data: Any) -> str | None:
        """The data-subject id named by the event, as a string; None if the spec names none."""
        if self.subject_path is None:
            return None
        cur = data
        for name, _ in parse_path(self.subject_path):
            if not isinstance(cur, dict) or name not in cur:
                raise FieldSpecError(f"data-subject field {self.subject_path!r} is missing")
            cur = cur[name]
        if isinstance(cur, bool) or not isinstance(cur, str | int) or cur == "":
            raise FieldSpecError(f"data-subject field {self.subject_path!r} must be a non-empty string or integer")
        return str(cur)

    def targets(self, data: Any) -> Iterator[Target]:
        """Every present sensitive value. A missing optional field is skipped; a path that
        runs into the wrong kind of container fails closed (it may hide a sensitive value)."""
        for rule in self.rules:
            yield from _walk(data, rule.segments, 0, "", rule)


def _walk(node: Any, segs: tuple[tuple[str, bool], ...], i: int, prefix: str, rule: FieldRule) -> Iterator[Target]:
    name, is_array = segs[i]
    if not isinstance(node, dict):
        raise FieldSpecError(f"expected an object at {prefix or '$'} for sensitive field {rule.path!r}")
    if name not in node:
        return
    here = f"{prefix}.{name}" if prefix else name
    last = i == len(segs) - 1
    if not is_array:
        if last:
            yield Target(here, node, name, rule)
        elif node[name] is not None:
            yield from _walk(node[name], segs, i + 1, here, rule)
        return
    items = node[name]
    if items is None:
        return
    if not isinstance(items, list):
        raise FieldSpecError(f"expected an array at {here} for sensitive field {rule.path!r}")
    for idx in range(len(items)):
        p = f"{here}[{idx}]"
        if last:
            yield Target(p, items, idx, rule)
        elif items[idx] is not None:
            yield from _walk(items[idx], segs, i + 1, p, rule)
