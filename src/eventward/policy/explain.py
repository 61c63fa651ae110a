"""Say why a request was denied and what grant would allow it, in policy.yaml's own words.

Pure functions over the parsed PolicySpec: the texts name policy ids, principals, actions and
resource ids, never context values other than the event type (routing metadata).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from eventward.policy.spec import ACTION_KINDS, ACTION_YAML, LITERAL, Grant, PolicySpec


def forbidden(policies: Iterable[str], sources: Mapping[str, str]) -> str:
    named = ", ".join(f"{p} ({sources.get(p, 'policy set')})" for p in policies)
    return f"none can help: forbidden by {named}; a forbid overrides every permit"


def missing_grant(
    spec: PolicySpec, principal: str, action: str, kind: str, rid: str, event_type: str | None
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
    )
    request = f"{principal} {action} {kind}::{rid}"
    text = f"a role of {principal} with {wanted.to_yaml()} (no policy permits {request})"
    hints = list(_near_misses(spec, principal, action, kind, rid, event_type))
    if hints:
        text += "; " + "; ".join(hints)
    return text


def _near_misses(
    spec: PolicySpec, principal: str, action: str, kind: str, rid: str, event_type: str | None
) -> Iterable[str]:
    yaml_action = ACTION_YAML[action]
    for g in spec.grants_of(principal):
        if g.effect != "allow" or not g.covers(action, kind, rid) or g.event_types is None:
            continue
        if event_type is None:
            yield f"{g.policy_id} allows it only with an event_type in the request context"
        else:
            types = ", ".join(g.event_types)
            yield f"{g.policy_id} allows {yaml_action} {kind}::{rid} only for event types [{types}]"
