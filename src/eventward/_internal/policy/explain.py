"""Say why a request was denied and what grant would allow it, in policy.yaml's own words.

Pure functions over the parsed PolicySpec: the texts name policy ids, principals, actions and
resource ids, never context values other than the event type and topic (routing metadata).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from eventward._internal.policy.spec import (
    ACTION_KINDS,
    ACTION_YAML,
    DLQ_SUFFIX,
    KEY_RELEASE_ACTIONS,
    LITERAL,
    Grant,
    PolicySpec,
)


def forbidden(policies: Iterable[str], sources: Mapping[str, str]) -> str:
    named = ", ".join(f"{p} ({sources.get(p, 'policy set')})" for p in policies)
    return f"none can help: forbidden by {named}; a forbid overrides every permit"


def missing_grant(
    spec: PolicySpec,
    principal: str,
    action: str,
    kind: str,
    rid: str,
    event_type: str | None,
    topic: str | None = None,
) -> str:
    """The grant that would allow a default-denied request, plus near misses that nearly did."""
    if principal not in spec.principals:
        return f"principal {principal} is not declared under principals: in policy.yaml"
    expected = ACTION_KINDS.get(action, ())
    if kind not in expected:
        return f"{action} applies to {' or '.join(expected)} resources, not {kind}"
    wanted = Grant(
        role="?",
        index=0,
        effect="allow",
        actions=(action,),
        kind=kind,
        names=(rid,),
        match=LITERAL,
        event_types=(event_type,) if event_type else None,
        on_topics=(_source(topic),) if topic and action in KEY_RELEASE_ACTIONS else None,
    )
    request = f"{principal} {action} {kind}::{rid}"
    text = f"a role of {principal} with {wanted.to_yaml()} (no policy permits {request})"
    hints = list(_near_misses(spec, principal, action, kind, rid, event_type, topic))
    if hints:
        text += "; " + "; ".join(hints)
    return text


def _source(topic: str) -> str:
    return topic[: -len(DLQ_SUFFIX)] if topic.endswith(DLQ_SUFFIX) and len(topic) > len(DLQ_SUFFIX) else topic


def _near_misses(
    spec: PolicySpec,
    principal: str,
    action: str,
    kind: str,
    rid: str,
    event_type: str | None,
    topic: str | None = None,
) -> Iterable[str]:
    yaml_action = ACTION_YAML[action]
    for g in spec.grants_of(principal):
        if g.effect != "allow" or not g.covers(action, kind, rid):
            continue
        if g.on_topics is not None and (topic is None or _source(topic) not in g.on_topics):
            where = "with a topic in the request context" if topic is None else (
                f"on topics [{', '.join(g.on_topics)}]")
            yield f"{g.policy_id} allows {yaml_action} {kind}::{rid} only {where}"
            continue
        if g.event_types is None or (event_type is not None and event_type in g.event_types):
            continue
        if event_type is None:
            yield f"{g.policy_id} allows it only with an event_type in the request context"
        else:
            types = ", ".join(g.event_types)
            yield f"{g.policy_id} allows {yaml_action} {kind}::{rid} only for event types [{types}]"
