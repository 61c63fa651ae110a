"""Compile policy.yaml to ``kafka-acls.sh`` commands (ALLOW and DENY ACLs).

Kafka resource patterns are exactly policy.yaml's: LITERAL (``*`` is the wildcard) and
PREFIXED. Publish is Write+Describe, subscribe is Read+Describe on the topic plus Read on the
principal's consumer groups: the literal group ``<principal>`` (the SDK's default group) and
the PREFIXED groups ``<principal>.<anything>``; no other group is granted. A literal topic
grant covers its ``<topic>.dlq`` too. Kafka ACLs are per topic, so grants limited to event
types, and anything decided by attributes, time or classes, are listed in the trailing
comment section rather than granted topic-wide. Kafka principals are ``User:<principal>``:
configure ``ssl.principal.mapping.rules`` so a client certificate maps to that name.
"""

from __future__ import annotations

import shlex

from eventward.policy import broker
from eventward.policy.base import PUBLISH, SUBSCRIBE
from eventward.policy.broker import with_dlq
from eventward.policy.compile_cedar import CompiledPolicy
from eventward.policy.spec import LITERAL, PREFIXED, Grant, PolicySpec

OPERATIONS = {PUBLISH: ("Write", "Describe"), SUBSCRIBE: ("Read", "Describe")}
DENY_OPERATIONS = {PUBLISH: ("Write",), SUBSCRIBE: ("Read",)}


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
    if g.event_types is not None:
        return "Kafka ACLs are per topic; event-type limits are enforced by eventward"
    return None


def _patterns(g: Grant) -> list[tuple[str, str]]:
    if g.is_wildcard:
        return [("*", LITERAL)]
    if g.match == PREFIXED:
        return [(n, PREFIXED) for n in g.names]
    return [(t, LITERAL) for n in g.names for t in with_dlq(n)]


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
                for topic, pattern in _patterns(g):
                    lines.append(
                        _acl(
                            bootstrap, "--allow-principal", name, OPERATIONS[action], "topic", topic, pattern
                        )
                    )
            for g in p.denies:
                for topic, pattern in _patterns(g):
                    lines.append(
                        _acl(
                            bootstrap,
                            "--deny-principal",
                            name,
                            DENY_OPERATIONS[action],
                            "topic",
                            topic,
                            pattern,
                        )
                    )
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
