"""Compile a PolicySpec plus hand-written Cedar files into one validated Cedar policy set.

Every policy gets a stable, readable id (``role:shipping:0`` for YAML grants, the ``@id``
annotation or ``<file>#<n>`` for hand-written ones) so decisions and errors name what a
reviewer can find. Nothing is activated unless the whole set parses and validates against
eventward.cedarschema extended with the attributes the YAML declares: a policy that reads an
attribute nobody can have, or an optional one without ``has``, is refused up front instead of
silently erroring (and being skipped) at decision time.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import cedarpy

from eventward._internal.policy.spec import (
    DLQ_SUFFIX,
    PREFIXED,
    Grant,
    PolicySpec,
    attribute_types,
)
from eventward.errors import PolicyError

NS = "Eventward"
# Context keys eventward derives from its clock; a policy reading one depends on time.
TIME_KEYS = ("hour", "minute", "weekday", "now")
_TIME_RE = re.compile(r"\b(" + "|".join(TIME_KEYS) + r")\b")
_POSITIONAL_RE = re.compile(r"\bpolicy(\d+)\b")
_MAX_CEDAR_BYTES = 1 << 20
_MAX_POLICY_ID = 128


@dataclass(frozen=True)
class CompiledPolicy:
    """A validated policy set ready to load into cedarpy handles."""

    text: str  # the full Cedar policy set
    ids: Mapping[str, str]  # Cedar positional id (policy0...) -> readable id
    sources: Mapping[str, str]  # readable id -> where it came from (YAML path or file name)
    effects: Mapping[str, str]  # readable id -> "permit" / "forbid"
    entities: str  # Cedar entities JSON (principals, roles, declared resources)
    schema: str  # Cedar schema JSON used for validation
    uses_time: bool  # some policy reads context.hour/minute/weekday/now


def uid(kind: str, rid: str) -> dict[str, str]:
    return {"type": f"{NS}::{kind}", "id": rid}


def _lit(kind: str, rid: str) -> str:
    # Names are restricted by spec.check_name to characters that need no escaping.
    return f'{NS}::{kind}::"{rid}"'


@cache
def base_schema() -> dict[str, Any]:
    text = resources.files("eventward._internal.policy").joinpath("eventward.cedarschema").read_text()
    return json.loads(text)


def schema_for(spec: PolicySpec) -> dict[str, Any]:
    """The base schema plus the (optional) attributes the YAML gives principals and resources."""
    schema = copy.deepcopy(base_schema())
    types = schema[NS]["entityTypes"]
    principal_attrs = attribute_types({p.name: p.attributes for p in spec.principals.values()})
    for etype in ("Service", "User"):
        _add_attrs(types[etype], principal_attrs)
    by_kind: dict[str, dict[Any, Mapping[str, Any]]] = {}
    for (kind, rid), attrs in spec.resources.items():
        by_kind.setdefault(kind, {})[rid] = attrs
    for kind, items in by_kind.items():
        _add_attrs(types[kind], attribute_types(items))
    return schema


def _add_attrs(entity_type: dict[str, Any], attrs: Mapping[str, str]) -> None:
    shape = entity_type["shape"]["attributes"]
    for name, t in attrs.items():
        decl: dict[str, Any] = (
            {"type": "Set", "element": {"type": "String"}} if t == "Set<String>" else {"type": t}
        )
        shape[name] = decl | {"required": False}


def grant_to_cedar(g: Grant) -> str:
    """One YAML grant as one Cedar permit/forbid with an @id annotation."""
    effect = "permit" if g.effect == "allow" else "forbid"
    if len(g.actions) == 1:
        action = f"action == {_lit('Action', g.actions[0])}"
    else:
        action = "action in [" + ", ".join(_lit("Action", a) for a in g.actions) + "]"
    conds: list[str] = []
    if g.is_wildcard:
        resource = f"resource is {NS}::{g.kind}"
    elif g.match == PREFIXED:
        resource = f"resource is {NS}::{g.kind}"
        conds.append(" || ".join(f'resource.name like "{p}*"' for p in g.names))
    elif len(g.names) == 1:
        resource = f"resource == {_lit(g.kind, g.names[0])}"
    else:
        resource = f"resource is {NS}::{g.kind}"
        conds.append("[" + ", ".join(_lit(g.kind, n) for n in g.names) + "].contains(resource)")
    if g.on_topics is not None:  # a topic's dead-letter stream carries the same data
        topics = ", ".join(f'"{t}", "{t}{DLQ_SUFFIX}"' for t in g.on_topics)
        conds.append(f"context has topic && [{topics}].contains(context.topic)")
    if g.event_types is not None:
        types = ", ".join(f'"{t}"' for t in g.event_types)
        conds.append(f"context has event_type && [{types}].contains(context.event_type)")
    when = "" if not conds else " when { " + " && ".join(f"({c})" for c in conds) + " }"
    return (
        f'@id("{g.policy_id}")\n{effect} (\n  principal in {_lit("Role", g.role)},\n  {action},\n'
        f"  {resource}\n){when};\n"
    )


def entities_for(spec: PolicySpec) -> list[dict[str, Any]]:
    ents: list[dict[str, Any]] = [{"uid": uid("Role", r), "attrs": {}, "parents": []} for r in spec.roles]
    for p in spec.principals.values():
        ents.append(
            {
                "uid": uid(p.type, p.name),
                "attrs": {"name": p.name, **p.attributes},
                "parents": [uid("Role", r) for r in p.roles],
            }
        )
    for (kind, rid), attrs in spec.resources.items():
        ents.append({"uid": uid(kind, rid), "attrs": {"name": rid, **attrs}, "parents": []})
    return ents


def _file_policies(name: str, text: str) -> list[tuple[str | None, str]]:
    """Parse one hand-written file: [(@id or None, effect)], refusing templates and bad syntax."""
    if not isinstance(text, str):
        raise PolicyError(f"{name}: Cedar file content must be text", path=name)
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # lone surrogates: text no file could hold
        raise PolicyError(f"{name}: Cedar file is not valid Unicode text", path=name) from None
    if size > _MAX_CEDAR_BYTES:
        raise PolicyError(f"{name}: Cedar file larger than {_MAX_CEDAR_BYTES} bytes", path=name)
    try:
        ps = cedarpy.PolicySet.from_str(text)
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as e:
        raise PolicyError(f"{name}: Cedar syntax error: {e}", path=name) from None
    if ps.templates():
        raise PolicyError(f"{name}: Cedar templates (?principal/?resource) are not supported", path=name)
    statics = est.get("staticPolicies", {})
    ordered = sorted(statics.items(), key=lambda kv: int(kv[0].removeprefix("policy")))
    return [(p.get("annotations", {}).get("id"), p["effect"]) for _, p in ordered]


def _check_ids(full: str, ids: Mapping[str, str]) -> None:
    """Explanations rely on Cedar numbering policies in text order; verify rather than assume."""
    try:
        statics = json.loads(cedarpy.policies_to_json_str(full)).get("staticPolicies", {})
    except ValueError as e:  # individually valid files can still clash once concatenated
        raise PolicyError(f"policy set does not parse: {e}", path="policy set") from None
    if set(statics) != set(ids) or any(
        (ann := p.get("annotations", {}).get("id")) is not None and ann != ids[pos]
        for pos, p in statics.items()
    ):
        raise PolicyError("policy ids do not line up with the combined policy set", path="policy set")


def compile_policy(spec: PolicySpec, cedar_files: Mapping[str, str] | None = None) -> CompiledPolicy:
    """Compile and validate; raise PolicyError naming the file, policy id or YAML key at fault."""
    parts: list[str] = []
    ids: dict[str, str] = {}
    sources: dict[str, str] = {}
    effects: dict[str, str] = {}
    for g in spec.grants():
        ids[f"policy{len(ids)}"] = g.policy_id
        sources[g.policy_id] = f"policy.yaml roles.{g.role}[{g.index}]"
        effects[g.policy_id] = "permit" if g.effect == "allow" else "forbid"
        parts.append(grant_to_cedar(g))
    uses_time = False
    for name in sorted(cedar_files or {}):
        text = (cedar_files or {})[name]
        for n, (annotated, effect) in enumerate(_file_policies(name, text)):
            pid = annotated if annotated else f"{name}#{n}"
            if not (0 < len(pid) <= _MAX_POLICY_ID and pid.isprintable() and "," not in pid):
                # ids name policies in logs, audit records and comma-joined lists
                why = f"needs an @id of 1..{_MAX_POLICY_ID} printable characters, no commas"
                raise PolicyError(f"{name}: policy #{n} {why}", path=name)
            if pid.startswith("role:"):
                raise PolicyError(f"{name}: @id {pid!r} uses the reserved role: prefix", path=name)
            if pid in sources:
                raise PolicyError(f"{name}: policy id {pid!r} is already used by {sources[pid]}", path=name)
            ids[f"policy{len(ids)}"] = pid
            sources[pid] = name
            effects[pid] = effect
        uses_time = uses_time or bool(_TIME_RE.search(text))
        parts.append(f"// --- {name}\n{text}\n")
    full = "\n".join(parts)
    schema = schema_for(spec)
    schema_json = json.dumps(schema)
    result = cedarpy.validate_policies(full, schema_json)
    if not result.validation_passed:
        first = result.errors[0]
        pid = ids.get(first.policy_id, first.policy_id)
        msg = _POSITIONAL_RE.sub(lambda m: ids.get(m.group(0), m.group(0)), first.error)
        where = sources.get(pid, "policy set")
        more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
        raise PolicyError(f"{where}: policy {pid!r} fails Cedar schema validation: {msg}{more}", path=where)
    _check_ids(full, ids)
    return CompiledPolicy(
        text=full,
        ids=ids,
        sources=sources,
        effects=effects,
        entities=json.dumps(entities_for(spec)),
        schema=schema_json,
        uses_time=uses_time,
    )
