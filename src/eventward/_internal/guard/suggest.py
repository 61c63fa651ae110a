"""``schema suggest-tags``: the tags a schema is missing, from what a sample's untagged fields carry.

The result is a new version of the schema document with ``x-eventward`` class tags added where
detectors found PII or secrets; it is proposed through the registry like any other change
(authorized, checked, approved by a second principal). Paths that a tag cannot name (map
values under ``additionalProperties``, fields reached through ``$ref``) are listed instead.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from eventward._internal.guard.detectors import CLASS_OF


@dataclass
class Suggestion:
    document: dict[str, Any]
    added: list[dict[str, Any]] = field(default_factory=list)  # path, kind(s), class, events
    unplaceable: list[dict[str, Any]] = field(default_factory=list)  # path, kinds, why


def _node(doc: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: Any = doc
    for seg in path.split("."):
        is_array = seg.endswith("[]")
        name = seg[:-2] if is_array else seg
        if name == "*" or "{key}" in name or not isinstance(node, dict):
            return None
        props = node.get("properties")
        if not isinstance(props, dict) or not isinstance(props.get(name), dict):
            return None
        node = props[name]
        if is_array:
            node = node.get("items")
            if not isinstance(node, dict):
                return None
    return node if isinstance(node, dict) else None


def suggest(document: dict[str, Any], counts: Counter[tuple[str, str]]) -> Suggestion:
    """``counts``: events per (untagged path, kind) from a scan of the sample."""
    doc = copy.deepcopy(document)
    out = Suggestion(doc)
    by_path: dict[str, list[tuple[str, int]]] = {}
    for (path, kind), n in counts.items():
        by_path.setdefault(path, []).append((kind, n))
    for path in sorted(by_path):
        kinds = sorted(by_path[path])
        classes = sorted({CLASS_OF.get(k, "pii") for k, _ in kinds})
        # one class per field: a secret outranks payment data, which outranks plain PII
        cls = next(c for c in ("secret", "payment", "pii") if c in classes)
        node = _node(doc, path)
        if node is None or "$ref" in node:
            out.unplaceable.append({"path": path, "kinds": [k for k, _ in kinds],
                                    "why": "not a named property of the schema (map, $ref or unknown)"})
            continue
        tag = node.get("x-eventward")
        if isinstance(tag, dict) and tag.get("class"):
            continue  # tagged meanwhile
        node["x-eventward"] = {**(tag if isinstance(tag, dict) else {}), "class": cls}
        out.added.append({"path": path, "kinds": [k for k, _ in kinds], "class": cls,
                          "events": max(n for _, n in kinds)})
    return out
