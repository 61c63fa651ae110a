"""The readable policy file (policy.yaml): principals, roles of grants, resource attributes.

This module only parses and checks; it knows nothing of Cedar or brokers. Every error names
the YAML key it is about (``roles.shipping[1].topic``) so a reviewer can fix the file
without reading code. Names are restricted to characters that are safe in Cedar strings,
NATS subjects and Kafka resource names, so no compiler ever needs to escape them.

Every resource kind uses Kafka's pattern semantics: a literal name, ``match: prefixed``, or
``"*"``. That includes producers, whose signing keys RotateKeys governs in the trust
registry: ``{allow: rotate_keys, producers: [orders-svc]}`` lets a service manage only its
own keys, ``{allow: rotate_keys, producer: "*"}`` is an administrator's grant.

Key releases are grants on a sensitivity class: ``{allow: encrypt, class: pii}`` lets a
producer get data keys of ``pii`` and ``{allow: decrypt, class: pii}`` lets a reader unwrap
them. Both can be narrowed to where the data flows: ``on_topics: [orders]`` (a topic covers
its dead-letter stream) and ``event_types: [OrderPlaced]`` check the topic and event type the
key is released for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from eventward._internal.log.partitions import MAX_PARTITIONS, partition_streams
from eventward._internal.policy import base
from eventward.errors import PolicyError

PARTITIONS = "partitions"  # a Topic resource attribute: how many partition streams it has

# YAML action names -> Cedar action ids.
YAML_ACTIONS: dict[str, str] = {
    "publish": base.PUBLISH,
    "subscribe": base.SUBSCRIBE,
    "encrypt": base.ENCRYPT,
    "decrypt": base.DECRYPT,
    "propose_schema": base.PROPOSE_SCHEMA,
    "approve_schema": base.APPROVE_SCHEMA,
    "approve_security": base.APPROVE_SECURITY,
    "read_schema": base.READ_SCHEMA,
    "manage_policy": base.MANAGE_POLICY,
    "forget": base.FORGET,
    "hold": base.HOLD,
    "rotate_keys": base.ROTATE_KEYS,
    "replay": base.REPLAY,
    "redrive_dlq": base.REDRIVE_DLQ,
    "read_audit": base.READ_AUDIT,
}
ACTION_YAML: dict[str, str] = {v: k for k, v in YAML_ACTIONS.items()}

# The resource kinds each action applies to (mirrors eventward.cedarschema). RotateKeys covers
# KEKs of a sensitivity class (Class) and signing keys of a producer principal in the trust
# registry (Producer); a grant picks one by its resource key (class: / producer:).
ACTION_KINDS: dict[str, tuple[str, ...]] = {
    base.PUBLISH: ("Topic",),
    base.SUBSCRIBE: ("Topic",),
    base.REPLAY: ("Topic",),
    base.REDRIVE_DLQ: ("Topic",),
    base.ENCRYPT: ("Class",),
    base.DECRYPT: ("Class",),
    base.ROTATE_KEYS: ("Class", "Producer"),
    base.PROPOSE_SCHEMA: ("Schema",),
    base.APPROVE_SCHEMA: ("Schema",),
    base.APPROVE_SECURITY: ("Schema",),
    base.READ_SCHEMA: ("Schema",),
    base.FORGET: ("Subject",),
    base.HOLD: ("Subject",),
    base.READ_AUDIT: ("Audit",),
    base.MANAGE_POLICY: ("Policy",),
}
KINDS = ("Topic", "Class", "Schema", "Subject", "Audit", "Policy", "Producer")
# YAML key naming the resources of a grant, per kind (singular and plural spellings).
KIND_KEYS: dict[str, tuple[str, str]] = {
    "Topic": ("topic", "topics"),
    "Class": ("class", "classes"),
    "Schema": ("schema", "schemas"),
    "Subject": ("subject", "subjects"),
    "Audit": ("audit", "audits"),
    "Policy": ("policy", "policies"),
    "Producer": ("producer", "producers"),
}
# Kinds whose resource key may be omitted (meaning all): singletons and opaque subject hashes.
IMPLICIT_ALL = ("Subject", "Audit", "Policy")

LITERAL = "literal"
PREFIXED = "prefixed"
WILDCARD = "*"

DLQ_SUFFIX = ".dlq"  # <topic>.dlq is the dead-letter stream of <topic> and shares its policy

PRINCIPAL_TYPES = {"service": "Service", "user": "User"}

_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ATTR_RE = re.compile(r"[a-z_][a-z0-9_]{0,63}")
# Kafka's legal topic characters, not starting with "-" (read as an option by CLI tools) or ".".
_TOPIC_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,248}")
_NAME_RE = {
    "Class": re.compile(r"[A-Za-z0-9_-]{1,64}"),
    "Schema": re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}"),
    "Subject": re.compile(r"[A-Za-z0-9_-]{1,128}"),
    "Audit": re.compile(r"[A-Za-z0-9._-]{1,64}"),
    "Policy": re.compile(r"[A-Za-z0-9._-]{1,64}"),
    "Producer": _PRINCIPAL_RE,  # a producer is a principal (and names its key files)
}
_EVENT_TYPE_RE = _NAME_RE["Schema"]
_RESERVED_ATTRS = ("name",)
_CEDAR_LONG = (-(2**63), 2**63 - 1)

MAX_POLICY_BYTES = 1 << 20
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_GRANT_KEYS = {"allow", "deny", "match", "event_types", "on_topics"} | {k for pair in KIND_KEYS.values() for k in pair}
# Actions whose grants may be narrowed by the topic and event type in the request context.
KEY_RELEASE_ACTIONS = (base.ENCRYPT, base.DECRYPT)


@dataclass(frozen=True)
class Grant:
    """One allow/deny rule of a role, compiled to one Cedar policy ``role:<role>:<index>``."""

    role: str
    index: int
    effect: str  # "allow" or "deny"
    actions: tuple[str, ...]
    kind: str
    names: tuple[str, ...]  # resource ids or patterns; ("*",) means every resource of the kind
    match: str = LITERAL
    event_types: tuple[str, ...] | None = None  # None: every event type
    on_topics: tuple[str, ...] | None = None  # key releases only: None means every topic

    @property
    def policy_id(self) -> str:
        return f"role:{self.role}:{self.index}"

    @property
    def is_wildcard(self) -> bool:
        return self.names == (WILDCARD,)

    def covers(self, action: str, kind: str, name: str) -> bool:
        """Does this grant's action and resource pattern cover the request (event types aside)?"""
        if action not in self.actions or kind != self.kind:
            return False
        return self.is_wildcard or any(pattern_matches(self.match, p, name) for p in self.names)

    def to_yaml(self) -> str:
        """The grant as a one-line YAML flow mapping, as a reviewer would write it."""
        acts = [ACTION_YAML[a] for a in self.actions]
        parts = [f"{self.effect}: {acts[0] if len(acts) == 1 else '[' + ', '.join(acts) + ']'}"]
        single, plural = KIND_KEYS[self.kind]
        if len(self.names) == 1:
            parts.append(f'{single}: "{self.names[0]}"' if self.is_wildcard else f"{single}: {self.names[0]}")
        else:
            parts.append(f"{plural}: [{', '.join(self.names)}]")
        if self.match != LITERAL:
            parts.append(f"match: {self.match}")
        if self.on_topics is not None:
            parts.append(f"on_topics: [{', '.join(self.on_topics)}]")
        if self.event_types is not None:
            parts.append(f"event_types: [{', '.join(self.event_types)}]")
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class PrincipalSpec:
    name: str
    type: str  # Cedar entity type without namespace: "Service" or "User"
    roles: tuple[str, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySpec:
    principals: Mapping[str, PrincipalSpec]
    roles: Mapping[str, tuple[Grant, ...]]
    resources: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    def grants(self) -> tuple[Grant, ...]:
        return tuple(g for gs in self.roles.values() for g in gs)

    def grants_of(self, principal: str) -> tuple[Grant, ...]:
        p = self.principals.get(principal)
        if p is None:
            return ()
        return tuple(g for r in p.roles for g in self.roles.get(r, ()))

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (``resources.Topic.<topic>.partitions``, default 1)."""
        n = self.resources.get(("Topic", topic), {}).get(PARTITIONS, 1)
        return n if type(n) is int else 1

    def partitioned(self) -> dict[str, int]:
        """Every topic declared with more than one partition."""
        return {rid: n for (kind, rid), a in self.resources.items()
                if kind == "Topic" and type(n := a.get(PARTITIONS, 1)) is int and n > 1}


def pattern_matches(match: str, pattern: str, name: str) -> bool:
    """Kafka resource-pattern semantics: LITERAL is exact (``*`` is the wildcard), PREFIXED is startswith."""
    if pattern == WILDCARD:
        return True
    return name.startswith(pattern) if match == PREFIXED else name == pattern


def parse_action(text: str) -> str:
    """Accept ``subscribe``, ``Subscribe``, ``SUBSCRIBE``, ``redrive_dlq`` or ``RedriveDLQ``."""
    t = text.strip()
    if t in ACTION_KINDS:
        return t
    by_lower = {a.lower(): a for a in ACTION_KINDS} | {k.replace("_", ""): v for k, v in YAML_ACTIONS.items()}
    found = by_lower.get(t.lower().replace("_", "").replace("-", ""))
    if found is None:
        raise PolicyError(f"unknown action {t!r}; known: {', '.join(YAML_ACTIONS)}", path="action")
    return found


def check_name(kind: str, name: str, path: str, *, prefix: bool = False) -> str:
    """Refuse resource names a broker or Cedar could misread (empty NATS tokens, wildcards, quotes)."""
    if not isinstance(name, str):
        raise PolicyError(f"{path}: a {kind.lower()} name must be a string", path=path)
    if kind == "Topic":
        ok = bool(_TOPIC_RE.fullmatch(name)) and not name.startswith(".") and ".." not in name
        ok = ok and (prefix or not name.endswith("."))
    else:
        ok = bool(_NAME_RE[kind].fullmatch(name))
    if not ok:
        raise PolicyError(f"{path}: {name!r} is not a valid {kind.lower()} name", path=path)
    return name


def parse(text: str, source: str = "policy.yaml") -> PolicySpec:
    """Parse and check a policy file; raise PolicyError naming the offending key."""
    if not isinstance(text, str):
        raise PolicyError(f"{source} must be text", path=source)
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # lone surrogates: text no file could hold
        raise PolicyError(f"{source} is not valid Unicode text", path=source) from None
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"{source} is larger than {MAX_POLICY_BYTES} bytes", path=source)
    try:
        doc = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader (libyaml's when available)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{source} is not valid YAML{where}", path=source) from None
    if doc is None:
        doc = {}
    _expect(isinstance(doc, dict), "", f"{source} must be a mapping with principals: and roles:")
    _no_unknown(doc, {"principals", "roles", "resources"}, "")
    roles = _parse_roles(doc.get("roles") or {})
    principals = _parse_principals(doc.get("principals") or {}, roles)
    resources = _parse_resources(doc.get("resources") or {})
    spec = PolicySpec(principals=principals, roles=roles, resources=resources)
    _check_partition_names(spec)
    return spec


def _check_partition_names(spec: PolicySpec) -> None:
    """A partition stream ``T.p<k>`` is decided as ``T``: no other topic may carry its name."""
    taken = {s: t for t, n in spec.partitioned().items() for s in partition_streams(t, n)[1:]}
    if not taken:
        return
    named = [(f"resources.Topic.{rid}", rid) for kind, rid in spec.resources if kind == "Topic"]
    named += [(f"roles.{g.role}[{g.index}]", n) for g in spec.grants() if g.kind == "Topic"
              and g.match == LITERAL for n in g.names]
    named += [(f"roles.{g.role}[{g.index}].on_topics", n) for g in spec.grants() for n in g.on_topics or ()]
    for path, name in named:
        _expect(name not in taken, path, f"{name!r} is a partition stream of topic {taken.get(name)!r}, "
                "not a topic of its own")


def _expect(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise PolicyError(f"{path}: {msg}" if path else msg, path=path)


def _no_unknown(obj: Mapping[str, Any], known: set[str], path: str) -> None:
    for k in obj:
        if k not in known:
            where = f"{path}.{k}" if path else str(k)
            raise PolicyError(
                f"{where}: unknown key (expected one of {', '.join(sorted(known))})", path=where
            )


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    _expect(
        isinstance(items, list) and len(items) > 0, path, "must be a string or a non-empty list of strings"
    )
    for i, v in enumerate(items):
        _expect(isinstance(v, str), f"{path}[{i}]", "must be a string")
    return tuple(items)


def _parse_roles(doc: Any) -> dict[str, tuple[Grant, ...]]:
    _expect(isinstance(doc, dict), "roles", "must map role names to lists of grants")
    roles: dict[str, tuple[Grant, ...]] = {}
    for role, grants in doc.items():
        path = f"roles.{role}"
        _expect(isinstance(role, str) and bool(_ROLE_RE.fullmatch(role)), path, "invalid role name")
        _expect(isinstance(grants, list), path, "must be a list of grants")
        roles[role] = tuple(_parse_grant(role, i, g, f"{path}[{i}]") for i, g in enumerate(grants))
    return roles


def _parse_grant(role: str, index: int, g: Any, path: str) -> Grant:
    _expect(isinstance(g, dict), path, "a grant must be a mapping like {allow: publish, topic: orders}")
    _no_unknown(g, _GRANT_KEYS, path)
    effects = [e for e in ("allow", "deny") if e in g]
    _expect(len(effects) == 1, path, "a grant needs exactly one of allow: or deny:")
    effect = effects[0]
    actions = []
    for i, a in enumerate(_str_list(g[effect], f"{path}.{effect}")):
        cedar = YAML_ACTIONS.get(a)
        _expect(
            cedar is not None,
            f"{path}.{effect}[{i}]",
            f"unknown action {a!r}; known: {', '.join(YAML_ACTIONS)}",
        )
        actions.append(cedar)
    kind = _grant_kind(g, actions, f"{path}.{effect}", path)
    single, plural = KIND_KEYS[kind]
    _expect(not (single in g and plural in g), path, f"use {single}: or {plural}:, not both")
    key = single if single in g else plural
    names = _str_list(g[key], f"{path}.{key}") if key in g else (WILDCARD,)  # omitted: an IMPLICIT_ALL kind
    match = g.get("match", LITERAL)
    _expect(match in (LITERAL, PREFIXED), f"{path}.match", "must be literal or prefixed")
    if WILDCARD in names:
        _expect(names == (WILDCARD,), f"{path}.{key}", '"*" matches everything and cannot be combined')
        _expect(match == LITERAL, f"{path}.match", '"*" is a literal wildcard; it cannot be prefixed')
    else:
        for i, n in enumerate(names):
            where = f"{path}.{key}[{i}]"
            check_name(kind, n, where, prefix=match == PREFIXED)
            _expect(
                kind != "Topic" or match == PREFIXED or not n.endswith(DLQ_SUFFIX),
                where,
                f"{n} is the DLQ of {n[: -len(DLQ_SUFFIX)]} and shares its grants: grant that topic",
            )
    key_release = kind == "Class" and all(a in KEY_RELEASE_ACTIONS for a in actions)
    event_types = None
    if "event_types" in g:
        _expect(
            kind == "Topic" or key_release,
            f"{path}.event_types",
            "event_types only apply to topic actions and to encrypt/decrypt",
        )
        event_types = _str_list(g["event_types"], f"{path}.event_types")
        for i, t in enumerate(event_types):
            _expect(
                bool(_EVENT_TYPE_RE.fullmatch(t)), f"{path}.event_types[{i}]", f"invalid event type {t!r}"
            )
    on_topics = None
    if "on_topics" in g:
        _expect(key_release, f"{path}.on_topics", "on_topics only apply to encrypt/decrypt grants on a class")
        on_topics = _str_list(g["on_topics"], f"{path}.on_topics")
        for i, t in enumerate(on_topics):
            where = f"{path}.on_topics[{i}]"
            check_name("Topic", t, where)
            _expect(not t.endswith(DLQ_SUFFIX), where, f"{t} is a DLQ and shares its topic's grants: name the topic")
    return Grant(role, index, effect, tuple(actions), kind, tuple(names), match, event_types, on_topics)


def _grant_kind(g: Mapping[str, Any], actions: list[str], actions_path: str, path: str) -> str:
    """The one resource kind a grant is about: common to all its actions, chosen by its resource key."""
    common = [k for k in KINDS if all(k in ACTION_KINDS[a] for a in actions)]
    _expect(bool(common), actions_path, "actions of one grant must apply to the same resource kind")
    named = [k for k in KINDS if any(key in g for key in KIND_KEYS[k])]
    for other in named:
        key = next(k for k in KIND_KEYS[other] if k in g)
        _expect(other in common, f"{path}.{key}", f"{key}: does not apply to {', '.join(actions)}")
    keys = " or ".join(f"{KIND_KEYS[k][0]}:" for k in common)
    _expect(len(named) <= 1, path, f"a grant is about one resource kind: use {keys}, not several")
    if not named:
        what = " or ".join(k.lower() for k in common)
        implicit = len(common) == 1 and common[0] in IMPLICIT_ALL
        _expect(implicit, path, f"missing {keys} (which {what} this grant is about)")
    return named[0] if named else common[0]


def _parse_principals(doc: Any, roles: Mapping[str, Any]) -> dict[str, PrincipalSpec]:
    _expect(isinstance(doc, dict), "principals", "must map principal names to {type:, roles:}")
    out: dict[str, PrincipalSpec] = {}
    attr_types: dict[str, str] = {}
    for name, p in doc.items():
        path = f"principals.{name}"
        _expect(isinstance(name, str) and bool(_PRINCIPAL_RE.fullmatch(name)), path, "invalid principal name")
        _expect(isinstance(p, dict), path, "must be a mapping like {type: service, roles: [...]}")
        _no_unknown(p, {"type", "roles", "attributes"}, path)
        ptype = PRINCIPAL_TYPES.get(p["type"]) if isinstance(p.get("type"), str) else None
        _expect(ptype is not None, f"{path}.type", "must be service or user")
        proles = _str_list(p["roles"], f"{path}.roles") if p.get("roles") else ()
        for i, r in enumerate(proles):
            _expect(r in roles, f"{path}.roles[{i}]", f"role {r!r} is not defined under roles:")
        attrs = _parse_attributes(p.get("attributes") or {}, f"{path}.attributes", attr_types)
        out[name] = PrincipalSpec(name, ptype, proles, attrs)
    return out


def _parse_resources(doc: Any) -> dict[tuple[str, str], Mapping[str, Any]]:
    _expect(isinstance(doc, dict), "resources", "must map a kind (Topic, Class...) to {id: {attr: value}}")
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for kind, items in doc.items():
        path = f"resources.{kind}"
        _expect(kind in KINDS, path, f"unknown resource kind; known: {', '.join(KINDS)}")
        _expect(isinstance(items, dict), path, "must map resource ids to attribute mappings")
        attr_types: dict[str, str] = {}
        for rid, attrs in items.items():
            check_name(kind, rid, f"{path}.{rid}")
            out[(kind, rid)] = _parse_attributes(attrs or {}, f"{path}.{rid}", attr_types)
            if PARTITIONS in out[(kind, rid)]:
                n = out[(kind, rid)][PARTITIONS]
                _expect(kind == "Topic" and type(n) is int and 1 <= n <= MAX_PARTITIONS, f"{path}.{rid}.{PARTITIONS}",
                        f"partitions is a topic's number of partitions, 1..{MAX_PARTITIONS}")
                _expect(not rid.endswith(DLQ_SUFFIX), f"{path}.{rid}.{PARTITIONS}",
                        "a dead-letter stream is not partitioned")
    return out


def cedar_type(value: Any) -> str | None:
    """The Cedar type of a YAML attribute value, or None if Cedar cannot hold it."""
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Long" if _CEDAR_LONG[0] <= value <= _CEDAR_LONG[1] else None
    if isinstance(value, str):
        return "String"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "Set<String>"
    return None


def _parse_attributes(doc: Any, path: str, types: dict[str, str]) -> dict[str, Any]:
    """Attributes become Cedar entity attributes; one name has one type across the file."""
    _expect(isinstance(doc, dict), path, "must map attribute names to values")
    for k, v in doc.items():
        where = f"{path}.{k}"
        _expect(isinstance(k, str) and bool(_ATTR_RE.fullmatch(k)), where, "invalid attribute name")
        _expect(k not in _RESERVED_ATTRS, where, f"{k!r} is reserved (eventward sets it)")
        t = cedar_type(v)
        _expect(t is not None, where, "must be a string, boolean, integer or non-empty list of strings")
        _expect(types.setdefault(k, t) == t, where, f"type {t} differs from {types[k]} used elsewhere")
    return dict(doc)


def attribute_types(specs: Mapping[Any, Mapping[str, Any]]) -> dict[str, str]:
    """Attribute name -> Cedar type over a collection of attribute mappings (already type-checked)."""
    out: dict[str, str] = {}
    for attrs in specs.values():
        for k, v in attrs.items():
            out[k] = cedar_type(v) or "String"
    return out
