"""Compile policy.yaml to a nats-server ``authorization { users = [...] }`` block.

Subject layout (the one definition NATS components import from here):

    topic subject   ew.<topic>                 e.g. ew.orders, ew.orders.eu (dots are tokens)
    DLQ             ew.<topic>.dlq             shares its source topic's grants
    partition       ew.<topic>.p<n>            n >= 1 of a partitioned topic: its topic's grants
    inbox prefix    _INBOX_<principal token>   pass as connect(inbox_prefix=...): replies stay private

Kafka patterns map onto whole NATS tokens: LITERAL ``orders`` is exactly ``ew.orders`` (never
``ew.orders-archive`` nor ``ew.orders.eu``), PREFIXED ``orders.`` is ``ew.orders.>``, ``*`` is
``ew.>``. A prefix that does not end at a ``.`` cannot be expressed with token wildcards: left
to eventward and listed, never over-granted. Event types are invisible to the broker (the
JetStream transport stores one message per sealed batch of mixed types): a type-limited grant
gives its topic's subjects and eventward enforces the types (broker.py; listed as such).

JetStream access (stream info, message gets, offsets) is exactly what eventward._internal.log.nats uses,
taken from its ``producer_permissions``/``consumer_permissions``. Stream names are single
tokens, so that access is granted for literal topics and ``*`` only, never for a prefix.

Consumers write dead letters (client/dlq.py appends to ``<topic>.dlq`` under the consumer's own
seal), and the DLQ shares its topic's policy, so a subscribe grant with JetStream access also
grants publishing to the DLQ subjects of its topics (``broker.topic_access``, the rule the Kafka
compiler uses too). Nobody but the operator may list streams (``STREAM.NAMES``): clients look
their stream up by name (``STREAM.INFO.<stream>``). For ``*`` those are ``ew.*.dlq``,
``ew.*.*.dlq``... up to DLQ_DEPTH tokens: ``ew.>`` would let a reader publish events on every
topic. A subscribe deny denies the same DLQ subjects on the publish side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from eventward._internal.log import nats as transport
from eventward._internal.policy import broker
from eventward._internal.policy.base import PUBLISH, SUBSCRIBE
from eventward._internal.policy.broker import with_dlq
from eventward._internal.policy.compile_cedar import CompiledPolicy
from eventward._internal.policy.spec import DLQ_SUFFIX, PREFIXED, Grant, PolicySpec, check_name

ROOT = "ew"
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9-]")
ALL = ">"
DLQ_DEPTH = 8  # "*" subscribers may append dead letters of topics of up to this many dot-separated parts


def token(text: str) -> str:
    """Text as exactly one NATS token, injectively (``_`` only ever starts an escape)."""
    return "".join(chr(b) if _TOKEN_SAFE.fullmatch(chr(b)) else f"_{b:02X}" for b in text.encode())


def nats_subject(topic: str) -> str:
    """The subject events of ``topic`` are published on: ``ew.<topic>``."""
    check_name("Topic", topic, "topic")
    return f"{ROOT}.{topic}"


def nats_inbox_prefix(principal: str) -> str:
    """The inbox prefix ``principal`` must connect with; the compiled config lets it read only these."""
    return "_INBOX_" + token(principal)


def _subjects(g: Grant) -> list[str] | None:
    if g.is_wildcard:
        return [f"{ROOT}.{ALL}"]
    if g.match == PREFIXED:
        if not all(n.endswith(".") for n in g.names):
            return None
        return [f"{ROOT}.{n}{ALL}" for n in g.names]
    return [nats_subject(t) for n in g.names for t in with_dlq(n)]


def _subject_expressible(g: Grant) -> str | None:
    if _subjects(g) is None:
        return "prefix does not end at a '.' token boundary (NATS wildcards match whole tokens)"
    return None


def _stream_expressible(g: Grant) -> str | None:
    why = _subject_expressible(g)
    if why is None and g.match == PREFIXED:
        return "JetStream stream names are single tokens: a prefix of streams is not expressible"
    return why


def _wildcard_js(action: str) -> list[str]:
    """``producer_permissions``/``consumer_permissions`` of every stream (stream names are one token)."""
    tail = ["$JS.API.STREAM.INFO.*", "$JS.API.STREAM.MSG.GET.*"]
    if action == PUBLISH:
        return tail
    return [*tail, "$JS.API.DIRECT.GET.*", f"$KV.{transport.OFFSETS_BUCKET}.*.*"]


def _literal(g: Grant) -> bool:
    return not g.is_wildcard and g.match != PREFIXED


def _access_subjects(spec: PolicySpec, g: Grant, action: str) -> tuple[list[str], list[str]]:
    """(subscribe, publish) subjects of a literal grant's topics, partitions and DLQs
    (broker.topic_access)."""
    sub: list[str] = []
    pub: list[str] = []
    for n in g.names:
        for t, access in broker.topic_access(action, n, spec.partitions(n)):
            (sub if access == broker.READ else pub).append(nats_subject(t))
    return sub, pub


def _js_allow(spec: PolicySpec, g: Grant, action: str) -> list[str]:
    """JetStream API subjects (all requests, hence publish permissions) the transport needs."""
    if g.is_wildcard:
        if action == PUBLISH:
            return _wildcard_js(PUBLISH)
        return _wildcard_js(SUBSCRIBE) + _dlq_subjects(g) + _wildcard_js(PUBLISH)  # + dead letters
    out = []
    for n in g.names:
        for t, access in broker.topic_access(action, n, spec.partitions(n)):
            perms = transport.consumer_permissions(t) if access == broker.READ else transport.producer_permissions(t)
            out += [s for s in perms if not s.startswith(f"{ROOT}.")]
    return out


def _dlq_subjects(g: Grant) -> list[str]:
    """The subjects of the DLQs of a grant's topics (a token-boundary prefix or ``*``: by depth)."""
    if g.is_wildcard:
        return [f"{ROOT}.{'*.' * n}dlq" for n in range(1, DLQ_DEPTH + 1)]
    if g.match == PREFIXED:
        return [f"{ROOT}.{p}{'*.' * n}dlq" for p in g.names for n in range(1, DLQ_DEPTH + 1 - p.count("."))]
    return [nats_subject(n + DLQ_SUFFIX) for n in g.names]


def read_api(topic: str) -> list[str]:
    """Every JetStream way to read a stream's messages: denied when subscribe is denied."""
    js = transport.stream_name(topic)
    return [
        f"$JS.API.STREAM.MSG.GET.{js}",
        f"$JS.API.DIRECT.GET.{js}",
        f"$JS.API.DIRECT.GET.{js}.>",
        f"$JS.API.CONSUMER.CREATE.{js}",
        f"$JS.API.CONSUMER.CREATE.{js}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{js}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{js}.*",
    ]


def _read_deny(spec: PolicySpec, g: Grant) -> list[str]:
    if g.is_wildcard:
        return ["$JS.API.STREAM.MSG.GET.*", "$JS.API.DIRECT.GET.>", "$JS.API.CONSUMER.>"]
    reads = [t for n in g.names for t, access in broker.topic_access(SUBSCRIBE, n, spec.partitions(n))
             if access == broker.READ]
    return [s for t in reads for s in read_api(t)]


_DEPTH_NOTE = (
    f"dead letters are appendable at the broker for topics of up to {DLQ_DEPTH} dot-separated parts "
    "(NATS wildcards match a fixed number of tokens before .dlq)"
)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def user_permissions(
    spec: PolicySpec, principal: str, forbids: list[broker.Forbid], notes: list[broker.Note]
) -> dict[str, dict[str, list[str]]]:
    pub_allow: list[str] = []
    pub_deny: list[str] = []
    sub_allow: list[str] = []
    sub_deny: list[str] = []
    for action in (PUBLISH, SUBSCRIBE):
        subj = broker.plan(spec, principal, action, _subject_expressible, forbids, notes)
        js_notes: list[broker.Note] = []
        js = broker.plan(spec, principal, action, _stream_expressible, forbids, js_notes, label="JetStream: ")
        noted = {n.policy_id for n in notes if n.principal == principal}
        notes.extend(n for n in js_notes if n.policy_id not in noted)
        allow, deny = (pub_allow, pub_deny) if action == PUBLISH else (sub_allow, sub_deny)
        for g in subj.allows:
            if _literal(g):
                sub, pub = _access_subjects(spec, g, action)
                sub_allow.extend(sub)
                pub_allow.extend(pub)
            else:
                allow += _subjects(g) or []
        for g in subj.denies:
            if _literal(g):
                sub, pub = _access_subjects(spec, g, action)
                sub_deny.extend(sub)
                pub_deny.extend(pub)
            else:
                deny += _subjects(g) or []
                if action == SUBSCRIBE:
                    pub_deny += _dlq_subjects(g)
        deny += [nats_subject(t) for t in subj.dlq_denies]
        pub_allow += [s for g in js.allows for s in _js_allow(spec, g, action)]
        if action == SUBSCRIBE:
            pub_deny += [s for g in js.denies for s in _read_deny(spec, g)]
            notes.extend(
                broker.Note(principal, g.policy_id, f"{g.to_yaml()}: {_DEPTH_NOTE}")
                for g in js.allows
                if g.is_wildcard
            )
        if action == PUBLISH and js.allows:
            notes.append(
                broker.Note(
                    principal,
                    "transport",
                    "JetStream producers read the stream tail "
                    "(STREAM.MSG.GET): publish implies broker-level read of those streams",
                )
            )
    if pub_allow or sub_allow:
        sub_allow.append(nats_inbox_prefix(principal) + ".>")
    perms: dict[str, dict[str, list[str]]] = {}
    for name, allow, deny in (("publish", pub_allow, pub_deny), ("subscribe", sub_allow, sub_deny)):
        # An empty allow list means "allow everything" to nats-server: deny all explicitly instead.
        perms[name] = {"allow": _dedupe(allow), "deny": _dedupe(deny)} if allow else {"deny": [ALL]}
    return perms


def compile_nats(
    spec: PolicySpec, compiled: CompiledPolicy | None = None, *, passwords: Mapping[str, str] | None = None
) -> str:
    """The nats-server config text. ``passwords`` (tests, dev) adds user/password auth per user."""
    forbids = broker.hand_written_forbids(compiled)
    notes: list[broker.Note] = []
    users = []
    for name in spec.principals:
        user: dict[str, object] = {"user": name}
        if passwords and name in passwords:
            user["password"] = passwords[name]
        user["permissions"] = user_permissions(spec, name, forbids, notes)
        users.append(user)
        notes.extend(broker.non_broker_notes(spec, name))
    notes.extend(broker.hand_written_notes(compiled))
    lines = [
        "# nats-server authorization compiled from eventward policy.yaml: users are principals",
        "# (map mTLS certificates to them with verify_and_map). Topic subjects are ew.<topic>;",
        "# clients connect with inbox_prefix _INBOX_<principal>.",
        "authorization {",
        "  users = [",
    ]
    lines += [f"    {json.dumps(u)}" for u in users]
    lines += ["  ]", "}", *broker.render_notes(notes, "#"), ""]
    return "\n".join(lines)
