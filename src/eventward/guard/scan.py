"""Which untagged field paths of events carry which kinds of PII or secrets: counts, never values.

A path is written the way schemas tag it (``customer.notes``, ``items[].comment``), so a
finding can become a tag. Object keys that are not plain names (a map keyed by emails, say)
are written ``*``: a path never repeats a value. Paths the schema tags (the encrypted ones)
and the data-subject field are skipped: they are protected already.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eventward.fieldspec import FieldSpec
from eventward.guard.detectors import Detectors, default_detectors

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}\Z")
MAX_DEPTH = 64


def _segment(key: object) -> str:
    return key if isinstance(key, str) and _NAME.match(key) else "*"


def leaves(data: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(tag-style path, value) for every scalar in ``data``; map keys that are not names are ``*``."""
    if depth > MAX_DEPTH:
        return
    if type(data) is dict:
        for k, v in data.items():
            seg = _segment(k)
            p = f"{prefix}.{seg}" if prefix else seg
            if type(v) is dict or type(v) is list:
                yield from leaves(v, p, depth + 1)
            else:
                yield p, v
            if seg == "*" and isinstance(k, str):  # the key itself may be the PII
                yield p + "{key}", k
    elif type(data) is list:
        p = f"{prefix}[]" if prefix else "[]"
        for v in data:
            if type(v) is dict or type(v) is list:
                yield from leaves(v, p, depth + 1)
            else:
                yield p, v


def protected_paths(spec: FieldSpec) -> frozenset[str]:
    """Tagged paths (encrypted) and the data-subject field: not reported."""
    paths = {r.path for r in spec.rules}
    if spec.subject_path:
        paths.add(spec.subject_path)
    return frozenset(paths)


def _covered(path: str, protected: frozenset[str]) -> bool:
    if path in protected:
        return True
    # a tagged object or array covers everything under it
    return any(path.startswith(p + ".") or path.startswith(p + "[]") for p in protected)


def findings(
    data: Any, spec: FieldSpec, detectors: Detectors | None = None
) -> list[tuple[str, str]]:
    """(path, kind) for each untagged value of one event that a detector confirms."""
    det = detectors or default_detectors()
    protected = protected_paths(spec)
    out: list[tuple[str, str]] = []
    kinds_of = det.kinds_of
    for path, value in leaves(data):
        kinds = kinds_of(value)
        if kinds and not _covered(path, protected):
            out.extend((path, k) for k in sorted(kinds))
    return out


@dataclass
class ScanReport:
    """Counts per (event type, path, kind), the schema versions seen, and how many events were read."""

    events: int = 0
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    versions: dict[str, set[int]] = field(default_factory=dict)
    skipped: int = 0  # events that could not be read (no schema, not JSON)

    def add(self, type_: str, version: int | None, found: Iterable[tuple[str, str]]) -> None:
        self.events += 1
        if version is not None:
            self.versions.setdefault(type_, set()).add(version)
        for path, kind in set(found):  # an event counts once per (path, kind)
            self.counts[(type_, path, kind)] += 1

    def rows(self) -> list[dict[str, Any]]:
        """The stable --json rows: type, schema versions, path, kind, events; never a value."""
        return [
            {
                "type": t,
                "schema_versions": sorted(self.versions.get(t, ())),
                "path": p,
                "kind": k,
                "events": n,
            }
            for (t, p, k), n in sorted(self.counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
        ]

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "skipped": self.skipped, "findings": self.rows()}
