"""What both broker compilers share: which grants a broker can enforce, and which it must not.

A broker sees topics (NATS: subjects), not event types, attributes, time or classes. The rule
for every compiler: never over-grant a topic. A grant the broker cannot express exactly is
left to eventward and listed as a note. So is an allow that overlaps a deny the broker cannot
express, or a hand-written Cedar forbid that may apply (its conditions are unknown to the
broker): granting the allow would let the broker pass what the forbid stops.

Event types are below the broker's unit (one message carries a sealed batch of mixed types),
so a grant limited to event types is projected onto its topics: an allow grants the topic
(the principal may use it) and a typed deny takes nothing away at the broker; eventward
enforces the types on every publish and read, and the notes list each such grant.

One DLQ rule for every target (``topic_access``): ``<topic>.dlq`` shares its topic's grants,
and consumers append the dead letters they write to the DLQ of what they read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from eventward._internal.log.partitions import partition_streams
from eventward._internal.policy.base import PUBLISH, SUBSCRIBE
from eventward._internal.policy.compile_cedar import NS, CompiledPolicy
from eventward._internal.policy.spec import DLQ_SUFFIX, PREFIXED, Grant, PolicySpec, PrincipalSpec, pattern_matches

BROKER_ACTIONS = (PUBLISH, SUBSCRIBE)
NOTES_HEADER = "enforced by eventward, not expressible in the broker"
READ, APPEND = "read", "append"  # what a broker permission lets a principal do to one stream
TYPES_GRANTED = "granted topic-wide at the broker; the event types are enforced by eventward"
TYPES_DENIED = "not a broker deny (the topic stays usable); the event types are enforced by eventward"


@dataclass(frozen=True)
class Note:
    principal: str
    policy_id: str
    reason: str


@dataclass
class ActionPlan:
    """One principal and one broker action: what to emit, and what was left to eventward."""

    allows: list[Grant] = field(default_factory=list)
    denies: list[Grant] = field(default_factory=list)
    # Literal topics to deny because an allowed prefix reaches a DLQ whose source it does not grant.
    dlq_denies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Forbid:
    """The scope of a hand-written Cedar forbid (conditions unknown to the broker)."""

    policy_id: str
    principal: dict[str, Any]
    action: dict[str, Any]
    resource: dict[str, Any]

    def may_apply(self, p: PrincipalSpec, action: str) -> bool:
        return _principal_in_scope(self.principal, p) and _action_in_scope(self.action, action)

    def may_overlap(self, g: Grant) -> bool:
        r = self.resource
        if r.get("op") != "==":
            return True  # all resources, `is Topic`, `in ...`: assume it may hit
        ent = r.get("entity", {})
        if ent.get("type") != f"{NS}::Topic":
            return False
        return g.is_wildcard or any(pattern_matches(g.match, n, ent.get("id", "")) for n in g.names)


def with_dlq(topic: str) -> tuple[str, ...]:
    """A literal topic grant covers its DLQ stream too (same policy as the source topic)."""
    return (topic,) if topic.endswith(DLQ_SUFFIX) else (topic, topic + DLQ_SUFFIX)


def topic_access(action: str, topic: str, partitions: int = 1) -> list[tuple[str, str]]:
    """The one DLQ and partition rule of every broker target: (stream, READ|APPEND) that a
    literal grant of ``action`` on ``topic`` gives, for allows and denies alike.

    eventward decides ``<topic>.dlq`` as ``<topic>``, so publish appends to both; a consumer
    appends the dead letters it writes (sealed with its own key) to the DLQ of the topic it
    reads, so subscribe reads both and appends to the DLQ, never to the topic itself. The
    partition streams of a partitioned topic (``<topic>.p<n>``, log/partitions.py) are the
    topic: same access; their dead letters go to the one ``<topic>.dlq``.
    """
    dlq = topic + DLQ_SUFFIX
    streams = partition_streams(topic, partitions) if not topic.endswith(DLQ_SUFFIX) else [topic]
    if action == PUBLISH:
        return [*((s, APPEND) for s in streams), (dlq, APPEND)]
    return [*((s, READ) for s in streams), (dlq, READ), (dlq, APPEND)]


def overlaps(a: Grant, b: Grant) -> bool:
    """Could some (topic, event type) match both grants' resource patterns?"""
    if (
        a.event_types is not None
        and b.event_types is not None
        and not set(a.event_types) & set(b.event_types)
    ):
        return False
    if a.is_wildcard or b.is_wildcard:
        return True
    for x in a.names:
        for y in b.names:
            if a.match == PREFIXED and b.match == PREFIXED:
                hit = x.startswith(y) or y.startswith(x)
            elif a.match == PREFIXED:
                hit = y.startswith(x)
            else:
                hit = pattern_matches(b.match, y, x)
            if hit:
                return True
    return False


def hand_written_forbids(compiled: CompiledPolicy | None) -> list[Forbid]:
    if compiled is None:
        return []
    statics = json.loads(cedarpy.policies_to_json_str(compiled.text)).get("staticPolicies", {})
    out = []
    for pos, p in statics.items():
        pid = compiled.ids.get(pos, pos)
        if p.get("effect") == "forbid" and not pid.startswith("role:"):
            out.append(Forbid(pid, p.get("principal", {}), p.get("action", {}), p.get("resource", {})))
    return out


def plan(
    spec: PolicySpec,
    principal: str,
    action: str,
    expressible: Callable[[Grant], str | None],
    forbids: list[Forbid],
    notes: list[Note],
    label: str = "",
) -> ActionPlan:
    """Split a principal's grants for ``action``; ``expressible`` returns None or why it is not."""
    p = spec.principals[principal]
    grants = [g for g in spec.grants_of(principal) if action in g.actions]
    out = ActionPlan()
    bad_denies: list[Grant] = []
    for g in grants:
        why = expressible(g)
        if g.effect == "deny" and g.event_types is not None:
            notes.append(Note(principal, g.policy_id, f"{label}{g.to_yaml()}: {TYPES_DENIED}"))
        elif why is not None:
            notes.append(Note(principal, g.policy_id, f"{label}{g.to_yaml()}: {why}"))
            if g.effect == "deny":
                bad_denies.append(g)
        elif g.effect == "deny":
            out.denies.append(g)
    applicable = [f for f in forbids if f.may_apply(p, action)]
    for g in grants:
        if g.effect != "allow" or expressible(g) is not None:
            continue
        clash = [d.policy_id for d in bad_denies if overlaps(g, d)]
        clash += [f.policy_id for f in applicable if f.may_overlap(g)]
        if clash:
            reason = f"{label}{g.to_yaml()}: withheld, may be stopped by {', '.join(clash)}"
            notes.append(Note(principal, g.policy_id, reason))
        else:
            out.allows.append(g)
            if g.event_types is not None:
                notes.append(Note(principal, g.policy_id, f"{label}{g.to_yaml()}: {TYPES_GRANTED}"))
    out.dlq_denies = dlq_leaks(out.allows, action) + partition_leaks(spec, out.allows, action)
    return out


def partition_leaks(spec: PolicySpec, allows: list[Grant], action: str) -> list[str]:
    """Partition streams a broker prefix would reach although eventward decides them as their topic.

    PREFIXED ``orders.`` matches ``orders.p1``, a partition of ``orders``, which the prefix does
    not grant: unless another allow covers ``orders``, the broker must deny it explicitly."""
    leaks = []
    for topic, n in spec.partitioned().items():
        if any(a.covers(action, "Topic", topic) for a in allows):
            continue
        for stream in partition_streams(topic, n)[1:]:
            if any(a.match == PREFIXED and a.covers(action, "Topic", stream) for a in allows):
                leaks.append(stream)
    return leaks


def dlq_leaks(allows: list[Grant], action: str) -> list[str]:
    """DLQs a broker prefix would reach although eventward decides them as their source topic.

    PREFIXED ``orders.`` matches the topic ``orders.dlq`` at the broker, but that is the DLQ of
    ``orders``, which the prefix does not grant. Unless another allow covers ``orders``, the
    broker must deny ``orders.dlq`` explicitly.
    """
    leaks = []
    for g in allows:
        if g.match != PREFIXED:
            continue
        for p in g.names:
            for cut in range(1, len(DLQ_SUFFIX) + 1):
                base = p[:-cut]
                if p[-cut:] != DLQ_SUFFIX[:cut] or not base:
                    continue
                if not any(a.covers(action, "Topic", base) for a in allows):
                    leaks.append(base + DLQ_SUFFIX)
    return list(dict.fromkeys(leaks))


def non_broker_notes(spec: PolicySpec, principal: str) -> Iterable[Note]:
    """Grants of eventward-level actions (decrypt, schema, forget...) need no broker permission."""
    for g in spec.grants_of(principal):
        others = [a for a in g.actions if a not in BROKER_ACTIONS]
        if others:
            yield Note(principal, g.policy_id, f"{g.to_yaml()}: eventward-level action, no broker permission")


def hand_written_notes(compiled: CompiledPolicy | None) -> Iterable[Note]:
    for pid, src in (compiled.sources if compiled else {}).items():
        if not pid.startswith("role:"):
            yield Note("*", pid, f"hand-written Cedar policy ({src}): conditions on attributes, time or zone")


def render_notes(notes: Iterable[Note], comment: str) -> list[str]:
    lines = [f"{comment} --- {NOTES_HEADER} ---"]
    lines.extend(f"{comment} {n.principal}: {n.policy_id} {n.reason}" for n in notes)
    return lines


def _uid_matches(ent: dict[str, Any], p: PrincipalSpec) -> bool:
    return ent.get("type") == f"{NS}::{p.type}" and ent.get("id") == p.name


def _in_principal(ent: dict[str, Any], p: PrincipalSpec) -> bool:
    roles = {(f"{NS}::Role", r) for r in p.roles}
    return _uid_matches(ent, p) or (ent.get("type"), ent.get("id")) in roles


def _principal_in_scope(scope: dict[str, Any], p: PrincipalSpec) -> bool:
    op = scope.get("op")
    if op == "==":
        return _uid_matches(scope.get("entity", {}), p)
    if op == "in":
        return _in_principal(scope.get("entity", {}), p)
    if op == "is":
        same_type = scope.get("entity_type") == f"{NS}::{p.type}"
        inner = scope.get("in")
        return same_type and (inner is None or _in_principal(inner.get("entity", {}), p))
    return True  # All, or anything newer than this code knows: assume it may apply


def _action_in_scope(scope: dict[str, Any], action: str) -> bool:
    op = scope.get("op")
    if op == "==":
        return scope.get("entity", {}).get("id") == action
    if op == "in":
        ents = scope.get("entities") or [scope.get("entity", {})]
        return any(e.get("id") == action for e in ents)
    return True
