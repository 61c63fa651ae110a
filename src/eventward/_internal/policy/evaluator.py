"""Evaluate one request against one loaded policy version (no cache, no logging).

The Cedar request is built here and only here: principal entity type from policy.yaml,
resource entity with its ``name`` attribute (so PREFIXED grants can use ``like``), the DLQ
stream ``<topic>.dlq`` evaluated as its source topic, and the time keys of the context taken
from eventward's clock rather than from the caller (a caller must not choose the hour).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import cedarpy

from eventward._internal.policy import explain
from eventward._internal.policy.base import Decision, Resource
from eventward._internal.policy.compile_cedar import CompiledPolicy, uid
from eventward._internal.policy.spec import ACTION_KINDS, DLQ_SUFFIX, KINDS, PolicySpec
from eventward.errors import InputError

# Context keys a caller may pass (all strings); anything else is ignored, time keys are ours.
CALLER_CONTEXT_KEYS = ("event_type", "topic", "zone")
_MAX_ID = 512
_ERR_POLICY_RE = re.compile(r"policy `(policy\d+)`")


def source_resource(resource: Resource) -> Resource:
    """A DLQ stream shares the policy of its source topic: ``orders.dlq`` is decided as ``orders``."""
    kind, rid = resource
    if kind == "Topic" and rid.endswith(DLQ_SUFFIX) and len(rid) > len(DLQ_SUFFIX):
        return kind, rid[: -len(DLQ_SUFFIX)]
    return resource


def time_context(ts: float) -> dict[str, int]:
    """UTC hour/minute/weekday (ISO, Monday=1) and ``now`` floored to the minute (cache bucket)."""
    t = time.gmtime(ts)
    return {"hour": t.tm_hour, "minute": t.tm_min, "weekday": t.tm_wday + 1, "now": int(ts // 60) * 60}


def check_request(action: str, resource: Any) -> None:
    """Programming errors get a typed error naming the bad part, never a Cedar traceback."""
    if action not in ACTION_KINDS:
        raise InputError(f"unknown action {action!r}", field="action")
    if not (isinstance(resource, tuple) and len(resource) == 2):
        raise InputError("resource must be a (kind, id) tuple", field="resource")
    kind, rid = resource
    if kind not in KINDS:
        raise InputError(f"unknown resource kind {kind!r}; known: {', '.join(KINDS)}", field="resource")
    if not isinstance(rid, str) or not 0 < len(rid) <= _MAX_ID or not rid.isprintable():
        raise InputError(f"invalid {kind} id (must be 1..{_MAX_ID} printable characters)", field="resource")


def caller_context(context: Mapping[str, Any] | None) -> dict[str, str]:
    if context is not None and not isinstance(context, Mapping):
        raise InputError("context must be a mapping", field="context")
    out: dict[str, str] = {}
    for k in CALLER_CONTEXT_KEYS:
        v = (context or {}).get(k)
        if v is None:
            continue
        if not isinstance(v, str):
            raise InputError(f"context.{k} must be a string", field=f"context.{k}")
        out[k] = v
    return out


class Evaluator:
    """An immutable loaded policy version: parsed cedarpy handles plus the spec for explanations."""

    def __init__(self, version: int, spec: PolicySpec, compiled: CompiledPolicy) -> None:
        self.version = version
        self.spec = spec
        self.compiled = compiled
        self.uses_time = compiled.uses_time
        self._policies = cedarpy.PolicySet.from_str(compiled.text)
        self._entities = cedarpy.Entities.from_json_str(compiled.entities)
        self._declared = set(spec.resources)

    def evaluate(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None, now: float
    ) -> Decision:
        check_request(action, resource)
        ctx = caller_context(context)
        kind = resource[0]
        src_kind, src_id = source_resource(resource)
        extra = MappingProxyType({"version": self.version})
        p = self.spec.principals.get(principal)
        if p is None or kind not in ACTION_KINDS[action]:
            why = explain.missing_grant(
                self.spec, principal, action, kind, src_id, ctx.get("event_type"), ctx.get("topic")
            )
            return Decision(False, principal, action, resource, missing=why, extra=extra)
        entities = self._entities
        if (src_kind, src_id) not in self._declared:
            delta = [{"uid": uid(src_kind, src_id), "attrs": {"name": src_id}, "parents": []}]
            entities = entities.with_added_json_str(json.dumps(delta))
        request = {
            "principal": uid(p.type, principal),
            "action": uid("Action", action),
            "resource": uid(src_kind, src_id),
            "context": {**ctx, **time_context(now)},
        }
        result = cedarpy.is_authorized(request, self._policies, entities)
        ids = self.compiled.ids
        reasons = tuple(sorted(ids.get(r, r) for r in result.diagnostics.reasons))  # Cedar's order varies
        errors = tuple(_readable_error(e, ids) for e in result.diagnostics.errors)
        failed = {ids.get(m, m) for e in result.diagnostics.errors for m in _ERR_POLICY_RE.findall(str(e))}
        failed_forbids = sorted(f for f in failed if self.compiled.effects.get(f) == "forbid")
        if result.allowed and failed_forbids:
            # Fail closed: a forbid that errored might have applied; Cedar alone would skip it.
            why = f"forbid {', '.join(failed_forbids)} could not be evaluated; failing closed"
            return Decision(False, principal, action, resource, tuple(failed_forbids), why, errors, extra)
        if result.allowed:
            return Decision(True, principal, action, resource, reasons, None, errors, extra)
        if reasons:
            why = explain.forbidden(reasons, self.compiled.sources)
            return Decision(
                False,
                principal,
                action,
                resource,
                reasons,
                why,
                errors,
                MappingProxyType({**extra, "forbidden": True}),
            )
        why = explain.missing_grant(
            self.spec, principal, action, src_kind, src_id, ctx.get("event_type"), ctx.get("topic")
        )
        return Decision(False, principal, action, resource, (), why, errors, extra)


def _readable_error(err: object, ids: Mapping[str, str]) -> str:
    return _ERR_POLICY_RE.sub(lambda m: f"policy `{ids.get(m.group(1), m.group(1))}`", str(err))


class NoPolicy:
    """Stands in before any policy is applied: deny everything, and say how to fix it."""

    version = 0
    uses_time = False
    spec = PolicySpec(principals={}, roles={})

    def evaluate(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None, now: float
    ) -> Decision:
        check_request(action, resource)
        why = "no policy has been applied yet: run 'eventward policy init'"
        return Decision(
            False, principal, action, resource, missing=why, extra=MappingProxyType({"version": 0})
        )
