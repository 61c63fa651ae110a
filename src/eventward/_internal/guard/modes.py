"""The producer guard's setting, ``x-eventward-guard`` at the root of an event type's schema.

We put it in the schema, not in the policy, because it is a property of the event type's
data and the schema is already governed for exactly that: a change is proposed, checked and
approved by a second principal, and weakening it (``block`` -> ``warn`` -> ``off``) is a
security regression that needs a security approval, like removing a PII tag.

    "x-eventward-guard": "block"                                  every topic
    "x-eventward-guard": {"*": "warn", "orders.eu": "block"}     per topic, "*" for the rest

Unset means ``off``.
"""

from __future__ import annotations

from typing import Any

from eventward.errors import SchemaError

GUARD_KEY = "x-eventward-guard"
OFF, WARN, BLOCK = "off", "warn", "block"
MODES = (OFF, WARN, BLOCK)
_RANK = {OFF: 0, WARN: 1, BLOCK: 2}
_MAX_TOPICS = 256


def check_guard(value: object) -> dict[str, str]:
    """The setting as ``{topic or "*": mode}``; SchemaError (naming the key) if malformed."""
    if value is None:
        return {"*": OFF}
    if isinstance(value, str):
        value = {"*": value}
    if not isinstance(value, dict) or not value or len(value) > _MAX_TOPICS:
        raise SchemaError(f'$: {GUARD_KEY} must be "off", "warn", "block" or an object of topic -> mode')
    out: dict[str, str] = {}
    for topic, mode in value.items():
        if not isinstance(topic, str) or not 1 <= len(topic) <= 249 or mode not in MODES:
            raise SchemaError(f"$: {GUARD_KEY} maps topic names (or \"*\") to one of {', '.join(MODES)}")
        out[topic] = mode
    out.setdefault("*", OFF)
    return out


def mode_for(document: dict[str, Any], topic: str) -> str:
    """The guard mode of ``topic`` under a (registered, so already checked) schema document."""
    setting = check_guard(document.get(GUARD_KEY))
    return setting.get(topic, setting["*"])


def weakened(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(topic, old mode, new mode) for every topic the new document guards less."""
    a, b = check_guard(old.get(GUARD_KEY)), check_guard(new.get(GUARD_KEY))
    out = []
    for topic in sorted(set(a) | set(b)):
        before, after = a.get(topic, a["*"]), b.get(topic, b["*"])
        if _RANK[after] < _RANK[before]:
            out.append((topic, before, after))
    return out
