"""Compile policy.yaml to ``kafka-acls.sh`` commands (ALLOW and DENY ACLs).

Kafka resource patterns are exactly policy.yaml's: LITERAL (``*`` is the wildcard) and
PREFIXED. Publish is Write+Describe, subscribe is Read+Describe on the topic plus Read on the
principal's consumer groups: the literal group ``<principal>`` (the SDK's default group) and
the PREFIXED groups ``<principal>.<anything>``; no other group is granted. A literal grant's
``<topic>.dlq`` follows the DLQ rule shared with the NATS compiler (``broker.topic_access``):
publishers write it, subscribers read it and append their dead letters to it. Kafka has no
suffix patterns, so ``*`` and prefix subscribers get no DLQ Write (listed). Kafka ACLs are per
topic: a grant limited to event types gives its topic and eventward enforces the types;
anything decided by attributes, time or classes is listed in the trailing comment section
rather than granted topic-wide. Kafka principals are ``User:<principal>``:
configure ``ssl.principal.mapping.rules`` so a client certificate maps to that name.
"""

from __future__ import annotations

import shlex

from eventward._internal.policy import broker
from eventward._internal.policy.base import PUBLISH, SUBSCRIBE
from eventward._internal.policy.compile_cedar import CompiledPolicy
from eventward._internal.policy.spec import LITERAL, PREFIXED, Grant, PolicySpec

OPERATIONS = {PUBLISH: ("Write", "Describe"), SUBSCRIBE: ("Read", "Describe")}
DENY_OPERATIONS = {PUBLISH: ("Write",), SUBSCRIBE: ("Read",)}
ACCESS_OPERATIONS = {broker.APPEND: ("Write", "Describe"), broker.READ: ("Read", "Describe")}
ACCESS_DENY_OPERATIONS = {broker.APPEND: ("Write",), broker.READ: ("Read",)}
_DLQ_NOTE = "dead letters need a literal subscribe grant on Kafka (no suffix ACL for <topic>.dlq)"


def kafka_group_prefix(principal: str) -> str:
    """Consumer group ids of ``principal`` other than its default must start with this (PREFIXED)."""
    return f"{principal}."


def kafka_groups(principal: str) -> list[tuple[str, str]]:
    """(group, pattern type) a subscriber may use: the Consumer's default group id is the principal."""
    return [(principal, LITERAL), (kafka_group_prefix(principal), PREFIXED)]


def foreign_groups(spec: PolicySpec, principal: str) -> list[tuple[str, str]]:
    """Groups of other principals that ``principal``'s prefix reaches (``a.`` covers ``a.b``'s).

    Principal names may contain dots, so the prefix of ``a`` matches the groups of ``a.b``:
    denied explicitly, or ``a`` could commit in (and move) ``a.b``'s positions."""
    prefix = kafka_group_prefix(principal)
    return [g for other in spec.principals if other.startswith(prefix) for g in kafka_groups(other)]


def _expressible(g: Grant) -> str | None:
    """Every topic pattern of policy.yaml is a Kafka pattern (event types: see broker.plan)."""
    return None


def _acls(
    spec: PolicySpec, g: Grant, action: str, ops: dict[str, tuple[str, ...]]
) -> list[tuple[str, str, tuple[str, ...]]]:
    """(resource name, pattern type, operations) of a grant, merged per resource."""
    if g.is_wildcard or g.match == PREFIXED:
        access = broker.APPEND if action == PUBLISH else broker.READ
        return [(n, PREFIXED if g.match == PREFIXED else LITERAL, ops[access]) for n in g.names]
    merged: dict[str, list[str]] = {}
    for n in g.names:
        for t, access in broker.topic_access(action, n, spec.partitions(n)):
            merged.setdefault(t, [])
            merged[t] += [op for op in ops[access] if op not in merged[t]]
    return [(t, LITERAL, tuple(o)) for t, o in merged.items()]


def _acl(
    bootstrap: str, who: str, principal: str, ops: tuple[str, ...], resource: str, name: str, pattern: str
) -> str:
    args = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--add", who, f"User:{principal}"]
    for op in ops:
        args += ["--operation", op]
    args += [f"--{resource}", name, "--resource-pattern-type", pattern]
    return " ".join(a if a == bootstrap else shlex.quote(a) for a in args)


def compile_kafka(
    spec: PolicySpec, compiled: CompiledPolicy | None = None, *, bootstrap: str = '"$KAFKA_BOOTSTRAP"'
) -> str:
    """A shell script of kafka-acls.sh lines; ``bootstrap`` is inserted verbatim (a shell word)."""
    forbids = broker.hand_written_forbids(compiled)
    notes: list[broker.Note] = []
    lines = [
        "#!/bin/sh",
        "# Kafka ACLs compiled from eventward policy.yaml (principals are User:<name>).",
        "set -e",
    ]
    for name in spec.principals:
        for action in (PUBLISH, SUBSCRIBE):
            p = broker.plan(spec, name, action, _expressible, forbids, notes)
            for g in p.allows:
                for topic, pattern, ops in _acls(spec, g, action, ACCESS_OPERATIONS):
                    lines.append(_acl(bootstrap, "--allow-principal", name, ops, "topic", topic, pattern))
                if action == SUBSCRIBE and (g.is_wildcard or g.match == PREFIXED):
                    notes.append(broker.Note(name, g.policy_id, f"{g.to_yaml()}: {_DLQ_NOTE}"))
            for g in p.denies:
                for topic, pattern, ops in _acls(spec, g, action, ACCESS_DENY_OPERATIONS):
                    lines.append(_acl(bootstrap, "--deny-principal", name, ops, "topic", topic, pattern))
            for topic in p.dlq_denies:
                lines.append(
                    _acl(
                        bootstrap, "--deny-principal", name, DENY_OPERATIONS[action], "topic", topic, LITERAL
                    )
                )
            if action == SUBSCRIBE and p.allows:
                lines.extend(
                    _acl(bootstrap, "--allow-principal", name, ("Read",), "group", group, pattern)
                    for group, pattern in kafka_groups(name)
                )
                lines.extend(
                    _acl(bootstrap, "--deny-principal", name, ("Read",), "group", group, pattern)
                    for group, pattern in foreign_groups(spec, name)
                )
        notes.extend(broker.non_broker_notes(spec, name))
    notes.extend(broker.hand_written_notes(compiled))
    return "\n".join([*lines, *broker.render_notes(notes, "#"), ""])
