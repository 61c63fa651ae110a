"""The gateway's HTTP contract, in one place: the OpenAPI 3.1 document *and* the route table.

The app registers exactly the operations listed here and validates every path, query and body
against these schemas before a backend sees it, so the document cannot drift from the server.
``docs/openapi.yaml`` is this document rendered (``python -m eventward._internal.gateway > docs/openapi.yaml``);
a test fails if the two differ. Every schema is closed (``additionalProperties: false``) and
bounded (lengths, item counts, ranges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventward._internal import envelope
from eventward._internal.log.partitions import MAX_PARTITIONS
from eventward._internal.policy.base import ACTIONS
from eventward._internal.policy.spec import KINDS

VERSION = "0.1.0"
MAX_BATCH = 500  # the default limits.max_batch_events; the served document states the configured one
MAX_CONSUME = 1000
MAX_WAIT_S = 30
MAX_PARTITION = MAX_PARTITIONS - 1
MAX_ATTR = 4096
NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"  # topics (= stream names), groups, event types
TOKEN_ID = "^[A-Za-z0-9._:-]{1,128}$"  # noqa: S105 (proposal and certificate ids, not a secret)
KID = "^[!-~]{1,256}$"  # printable ASCII, no spaces
CLASS = "^[a-z][a-z0-9_-]{0,31}$"
REASON_CODE = "^([a-z0-9][a-z0-9_.-]{0,63})?$"  # reason codes, never free text (they are audited)
HEX = "^[0-9a-f]{1,128}$"
B64URL = "^[A-Za-z0-9_-]{0,1024}$"
# RFC 3339 with real calendar dates (30-day months, February, leap years), so that what the
# document calls valid the envelope parser accepts too.
_DATE = (
    "(?:[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
    "-02-29)"
)
_TIME = (
    "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
RFC3339 = f"^{_DATE}T{_TIME}$"
EXTENSION_NAME = "^([a-z0-9]{1,20}|data_base64)$"
# What a client may name: the same, without eventward's reserved "ew" prefix.
CLIENT_EXTENSION_NAME = "^([a-df-z0-9][a-z0-9]{0,19}|e|e[a-vx-z0-9][a-z0-9]{0,18}|data_base64)$"
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
MAX_DATA_BASE64 = 4 * 1024 * 1024 // 3 * 4  # a 4 MiB body's worth; the server's byte limits apply
# Media types of the publish body (CloudEvents HTTP binding): today's batch, batched mode, structured.
JSON = "application/json"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
NULL = {"type": "null"}


def _s(max_len: int, pattern: str | None = None, min_len: int = 1, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "string", "minLength": min_len, "maxLength": max_len, **kw}
    if pattern:
        d["pattern"] = pattern
    return d


def _int(minimum: int = 0, maximum: int = 2**63 - 1, **kw: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **kw}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "required": list(required),
        **kw,
    }


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(items: dict[str, Any], max_items: int, min_items: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": min_items, "maxItems": max_items}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional CloudEvents attribute: JSON null means unset (JSON format, section 3)."""
    return {"anyOf": [schema, NULL]}


_ATTR = _s(MAX_ATTR)
_EXT = {"anyOf": [_s(MAX_ATTR, min_len=0), INT32, {"type": "boolean"}, NULL]}
_CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "description": "A CloudEvents 1.0 event in the JSON format. Every attribute is kept as sent or the "
    "event is refused by name: `time` stays the producer's (eventward adds its own acceptance time "
    "as `ewtime`), `dataschema` is kept, `traceparent`/`tracestate` (W3C Trace Context) reach "
    "consumers. Extension attributes are lowercase alphanumeric names (at most 20) with string, "
    "integer or boolean values; `ew*` names are eventward's own and refused from clients. A null "
    "attribute is unset. Data must be JSON (the registered schema validates it): `data`, or "
    "`data_base64` holding JSON bytes with a JSON `datacontenttype`.",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": _ATTR,
        "source": _s(MAX_ATTR, envelope.URI_REFERENCE),
        "type": _ATTR,
        "subject": _opt(_ATTR),
        "dataschema": _opt(_s(MAX_ATTR, envelope.ABSOLUTE_URI)),
        "datacontenttype": _opt(_s(MAX_ATTR, envelope.JSON_MEDIA_TYPE)),
        "time": _opt(_s(64, RFC3339)),
        "data": {"description": "Event payload (JSON); sensitive fields are encrypted by the gateway."},
        "data_base64": _opt(
            _s(MAX_DATA_BASE64, BASE64, min_len=0, description="JSON data, base64-encoded (RFC 4648).")
        ),
        "traceparent": _opt(_s(512, envelope.TRACEPARENT_PATTERN, description="W3C Trace Context.")),
        "tracestate": _opt(_s(MAX_ATTR, min_len=0, description="W3C Trace Context.")),
    },
    "propertyNames": {"pattern": CLIENT_EXTENSION_NAME},
    "additionalProperties": _EXT,
    "maxProperties": 64,
    "allOf": [{"not": {"required": ["data", "data_base64"]}}],
}
_DELIVERED: dict[str, Any] = {
    **_CLOUDEVENT,
    "description": "A CloudEvent as delivered: the producer's attributes as sent, eventward's own "
    "(`ewproducer`, `ewseq`, `ewschema`, `ewsubject`, `ewtime`) added, data decrypted as far as the "
    "caller is cleared.",
    "properties": {**_CLOUDEVENT["properties"], "ewseq": _int()},
    "propertyNames": {"pattern": EXTENSION_NAME},
}


def schemas(max_batch: int = MAX_BATCH) -> dict[str, dict[str, Any]]:
    """The component schemas; ``max_batch`` is the server's configured batch limit."""
    return {
        **SCHEMAS,
        "PublishRequest": _arr(ref("CloudEvent"), max_batch, 1),
        "PublishResponse": _obj(
            {
                "accepted": _int(0, max_batch),
                "ids": _arr(_ATTR, max_batch),
                "first_offset": {"type": ["integer", "null"], "minimum": 0},
            },
            ("accepted", "ids"),
        ),
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "CloudEvent": _CLOUDEVENT,
    "DeliveredEvent": _DELIVERED,
    "PublishRequest": {},  # set below by schemas()
    "PublishResponse": {},
    "Delivery": _obj({"offset": _int(), "event": ref("DeliveredEvent"), "partition": _int(
        0, MAX_PARTITION, description="The topic partition the event was read from (0 for an unpartitioned "
        "topic); offsets count per partition.")}, ("offset", "event")),
    "ConsumeResponse": _obj({"events": _arr(ref("Delivery"), MAX_CONSUME), "lag": _int()}, ("events", "lag")),
    "AckRequest": _obj({"group": _s(200, NAME), "offset": _int(), "partition": _int(
        0, MAX_PARTITION, description="The partition whose offset is committed (default 0); a partitioned "
        "topic is acked partition by partition.")}, ("group", "offset")),
    "AckResponse": _obj({"group": _s(200, NAME), "committed": _int(), "partition": _int(0, MAX_PARTITION)},
                        ("group", "committed")),
    "SchemaFormat": {"type": "string", "enum": ["json", "avro"]},
    "SchemaDocument": {
        "type": "object",
        "description": "A JSON Schema or an Avro schema (as JSON).",
        "maxProperties": 256,
    },
    "SchemaRequest": _obj({"schema": ref("SchemaDocument"), "format": ref("SchemaFormat")}, ("schema",)),
    "ApproveRequest": _obj(
        {
            "security": {
                "type": "boolean",
                "default": False,
                "description": "Give the security approval (ApproveSecurity) instead of the schema approval; "
                "it must come from a third principal, neither the proposer nor the schema approver.",
            }
        }
    ),
    "SchemaVersion": _obj(
        {
            "type": _s(200, NAME),
            "version": _int(1),
            "format": ref("SchemaFormat"),
            "schema": ref("SchemaDocument"),
            "status": {"type": "string", "enum": ["pending", "approved"]},
        },
        ("type", "version", "format", "schema", "status"),
    ),
    "SchemaSummary": _obj(
        {"type": _s(200, NAME), "latest_version": _int(0), "pending": _int(0)},
        ("type", "latest_version", "pending"),
    ),
    "SchemaList": _obj({"schemas": _arr(ref("SchemaSummary"), 100_000)}, ("schemas",)),
    "SchemaProposal": _obj(
        {
            "proposal": _s(128, TOKEN_ID),
            "type": _s(200, NAME),
            "version": _int(1),
            "status": {"type": "string", "enum": ["pending", "approved"]},
            "security_changes": _arr(_s(128), 256),
        },
        ("proposal", "type", "version", "status", "security_changes"),
    ),
    "SchemaCheck": _obj(
        {
            "compatible": {"type": "boolean"},
            "problems": _arr(_s(1024), 256),
            "security_changes": _arr(_s(128), 256),
        },
        ("compatible", "problems", "security_changes"),
    ),
    "UnwrapRequest": _obj({"kid": _s(256, KID), "class": _s(32, CLASS)}, ("kid", "class")),
    "UnwrapResponse": _obj(
        {
            "kid": _s(256, KID),
            "class": _s(32, CLASS),
            "key": _s(64, B64URL, description="The data key, base64url without padding."),
        },
        ("kid", "class", "key"),
    ),
    "SubjectRequest": _obj(
        {"subject": _s(256, description="Raw data-subject id (kept out of URLs).")}, ("subject",)
    ),
    "ForgetRequest": _obj(
        {
            "subject": _s(256, description="Raw data-subject id (kept out of URLs)."),
            "reason": _s(
                64,
                REASON_CODE,
                min_len=0,
                description="A short code (e.g. gdpr-art17), not free text: it is audited.",
            ),
            "now": {
                "type": "boolean",
                "default": False,
                "description": "Close the KEK epoch at once: rotate the subject's classes and destroy the KEK "
                "versions that wrapped its keys (needs RotateKeys on each class, checked first).",
            },
        },
        ("subject",),
    ),
    "HoldRequest": _obj(
        {
            "subject": _s(256),
            "reason": _s(
                64,
                REASON_CODE,
                min_len=0,
                description="A short code (e.g. litigation-2026-17), not free text: it is audited.",
            ),
        },
        ("subject",),
    ),
    "SubjectStatus": _obj({"status": {"type": "string", "enum": ["held", "released"]}}, ("status",)),
    "ErasureCertificate": _obj(
        {
            "certificate": _s(128, TOKEN_ID),
            "subject_hash": _s(128, HEX),
            "keys_destroyed": _int(),
            "issued_at": _s(64, RFC3339),
            "complete_after": _s(64, RFC3339),
            "audit_index": _int(),
            "signature": _s(1024, B64URL),
            "document": _s(
                65536,
                description="The signed certificate with its audit inclusion proof and checkpoint "
                "(verify offline with the audit verifier key).",
            ),
        },
        (
            "certificate",
            "subject_hash",
            "keys_destroyed",
            "issued_at",
            "complete_after",
            "audit_index",
            "signature",
        ),
    ),
    "Checkpoint": _obj(
        {
            "tree_size": _int(),
            "root_hash": _s(128, HEX),
            "timestamp": _s(64, RFC3339),
            "signature": _s(1024, B64URL),
            "key_id": _s(256, KID),
        },
        ("tree_size", "root_hash", "timestamp", "signature", "key_id"),
    ),
    "InclusionProof": _obj(
        {"index": _int(), "tree_size": _int(1), "leaf_hash": _s(128, HEX), "path": _arr(_s(128, HEX), 64)},
        ("index", "tree_size", "leaf_hash", "path"),
    ),
    "Resource": _obj({"kind": {"type": "string", "enum": list(KINDS)}, "id": _s(256)}, ("kind", "id")),
    "ExplainRequest": _obj(
        {
            "principal": _s(256, description="Whom to explain for (default: the caller)."),
            "action": {"type": "string", "enum": list(ACTIONS)},
            "resource": ref("Resource"),
            "event_type": _s(
                200, NAME, description="Event type of the request (Publish grants may be limited to types)."
            ),
        },
        ("action", "resource"),
    ),
    "Explanation": _obj(
        {
            "allowed": {"type": "boolean"},
            "principal": _s(256),
            "action": _s(64),
            "resource": ref("Resource"),
            "policies": _arr(_s(512), 256),
            "missing": {"type": ["string", "null"], "maxLength": 1024},
            "explanation": _s(16384),
        },
        ("allowed", "principal", "action", "resource", "policies", "missing", "explanation"),
    ),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}}, ("status",)),
    "WhoAmI": _obj(
        {"principal": _s(256), "method": {"type": "string", "enum": ["mtls", "jwt", "dev"]}},
        ("principal", "method"),
    ),
    "Problem": _obj(
        {
            "type": _s(256),
            "title": _s(256),
            "status": _int(100, 599),
            "detail": _s(4096, min_len=0),
            "instance": _s(256),
            "code": _s(64),
            "reason": _s(64),
            "path": _s(1024, min_len=0),
            "rule": _s(256, min_len=0),
            "index": _int(),
            "limit": _int(),
            "retry_after": _int(1),
            "missing": _s(1024),
        },
        ("type", "title", "status", "detail", "code"),
        description="RFC 9457 problem details; `code` is the stable eventward error code.",
    ),
}
SCHEMAS.update(schemas())

# --- the control API (client mode): what services ask instead of holding a home -------------------
MAX_CONTROL_KEYS = 1000
_STATEMENT = _obj(
    {"kind": {"type": "string", "enum": ["trust", "notice", "grant"]}, "body": _s(90000, "^[A-Za-z0-9_-]+$"),
     "sig": _s(100, B64URL)},
    ("kind", "body", "sig"),
    description="Canonical JSON (base64url) under an Ed25519 signature by the control plane's anchor key.",
)
SCHEMAS.update({
    "ControlEncryptRequest": _obj({
        "topic": _s(200, NAME), "type": _s(200, NAME),
        "keys": _arr(_obj({"subject": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
                           "class": _s(32, CLASS), "nonces": _int(1, 2**31 - 1)}, ("subject", "class", "nonces")),
                     MAX_CONTROL_KEYS, 1),
    }, ("topic", "type", "keys")),
    "ControlEncryptResponse": _obj({"keys": _arr(_obj({
        "kid": _s(256, KID), "dek": _s(64, BASE64), "subject_hash": {"type": ["string", "null"], "maxLength": 128},
    }, ("kid", "dek", "subject_hash")), MAX_CONTROL_KEYS)}, ("keys",)),
    "ControlDecryptRequest": _obj({
        "topic": _s(200, NAME), "type": _s(200, NAME),
        "keys": _arr(_obj({"kid": _s(256, KID), "class": _s(32, CLASS),
                           "subject_hash": {"type": ["string", "null"], "maxLength": 128, "pattern": HEX}},
                          ("kid", "class")),
                     MAX_CONTROL_KEYS, 1),
    }, ("topic", "type", "keys")),
    "ControlDecryptResponse": _obj({"keys": {
        "type": "object", "maxProperties": MAX_CONTROL_KEYS,
        "additionalProperties": {"oneOf": [
            _obj({"dek": _s(64, BASE64)}, ("dek",)),
            _obj({"error": {"type": "string", "enum": ["forbidden", "erased", "not_found"]}}, ("error",)),
        ]},
    }}, ("keys",)),
    "ControlSchema": _obj({
        "type": _s(200, NAME), "version": _int(1), "format": ref("SchemaFormat"), "fingerprint": _s(128),
        "document": _s(4 * 1024 * 1024, BASE64), "report": {"type": "object", "maxProperties": 64},
    }, ("type", "version", "format", "fingerprint", "document", "report")),
    "Statement": _STATEMENT,
    "ControlTopic": _obj({"topic": _s(200, NAME), "partitions": _int(1, MAX_PARTITIONS)}, ("topic", "partitions")),
    "ControlTrust": _obj({"entries": _arr(ref("Statement"), 100_000)}, ("entries",)),
    "ControlAuditConsistency": _obj({
        "checkpoint": _s(8192, description="The latest checkpoint: a signed note (c2sp.org/tlog-checkpoint) to "
                         "verify against the audit key pinned out of band."),
        "proof": {"oneOf": [{"type": "null"}, _obj({
            "old_size": _int(), "new_size": _int(), "hashes": _arr(_s(44, BASE64), 128)},
            ("old_size", "new_size", "hashes"))]},
    }, ("checkpoint", "proof")),
    "ControlDecideRequest": _obj({
        "action": {"type": "string", "enum": list(ACTIONS)}, "resource": ref("Resource"),
        "context": {"type": "object", "maxProperties": 16},
        "about": _s(256, description="Another producer whose Publish right a subscriber of the topic asks about."),
    }, ("action", "resource")),
    "ControlDecideResponse": _obj({"allowed": {"type": "boolean"}}, ("allowed",)),
    "ControlGroup": _obj({"group": _s(128, NAME)}, ("group",)),
    "ControlGroupRegistered": _obj({"group": _s(400)}, ("group",)),
    "ControlErasuresDue": _obj({"due": _arr(_s(32, "^[0-9a-f]{32}$"), 100_000)}, ("due",)),
    "ControlAck": _obj({"subject": _s(32, "^[0-9a-f]{32}$"), "error": _s(64, "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")},
                       ("subject",)),
    "ControlAckResponse": _obj({"completed": {"type": "boolean"}}, ("completed",)),
})

# Operator operations (the CLI's client mode, `eventward --profile NAME ...`): metadata only.
MAX_AUDIT_RECORDS = 1000
MAX_DEAD_LETTERS = 10_000
_NULLABLE_TEXT = {"type": ["string", "null"], "maxLength": 4096}
SCHEMAS.update({
    "AuditRecord": _obj({
        "index": _int(), "time": _s(64), "principal": _s(512), "action": _s(128), "resource": _s(1024),
        "outcome": _s(32), "reason": _s(256, min_len=0),
        "meta": {"type": "object", "maxProperties": 64, "description": "Metadata (counts, ids, hashes); "
                 "never payloads."},
    }, ("index", "time", "principal", "action", "resource", "outcome", "reason", "meta")),
    "AuditRecords": _obj({"records": _arr(ref("AuditRecord"), MAX_AUDIT_RECORDS)}, ("records",)),
    "KeyClassStatus": _obj({
        "class": _s(64), "kek": _s(256), "live_keks": _arr(_s(256), 10_000), "destroyed_keks": _arr(_s(256), 10_000),
        "deks": _int(), "subjects": _int(), "erased_keys": _int(),
    }, ("class", "kek", "live_keks", "destroyed_keks", "deks", "subjects", "erased_keys")),
    "KeyStatus": _obj({
        "classes": _arr(ref("KeyClassStatus"), 1000), "legal_holds": _int(), "erasures": _int(),
        "revocation_epoch": _int(),
    }, ("classes", "legal_holds", "erasures", "revocation_epoch")),
    "DeadLetter": _obj({
        "dlq_offset": _int(), "code": _s(64), "reason": _s(128, min_len=0), "stream": _s(256), "offset": _int(),
        "batch": _s(256, min_len=0), "index": _int(), "event_id": _NULLABLE_TEXT,
        "event_type": {"type": ["string", "null"], "maxLength": 256}, "attempts": _int(),
        "error": _s(256, min_len=0), "at": {"type": "number"}, "by": _s(256, min_len=0), "group": _s(400, min_len=0),
    }, ("dlq_offset", "code", "reason", "stream", "offset", "event_id", "event_type", "attempts")),
    "DeadLetterList": _obj({"topic": _s(200, NAME), "entries": _arr(ref("DeadLetter"), MAX_DEAD_LETTERS),
                            "more": {"type": "boolean"}}, ("topic", "entries", "more")),
    "ServiceApproval": _obj({
        "request": _s(16 * 1024, description="The service's enrollment.json, as text (its proof of possession "
                      "covers these bytes)."),
        "may_seal": {"type": "object", "maxProperties": 256, "propertyNames": {"pattern": NAME},
                     "additionalProperties": _arr(_s(200, NAME), 256),
                     "description": "Topic -> event types the service may seal."},
        "days": _int(1, 397, default=30),
        "control_urls": _arr(_s(2048, "^https://"), 16),
        "nats_servers": _arr(_s(2048, "^(nats|tls)://"), 16),
    }, ("request",)),
    "ServiceGrant": _obj({"anchor": _s(128, B64URL), "statement": ref("Statement")}, ("anchor", "statement")),
    "Alert": _obj({
        "index": {"type": ["integer", "null"], "minimum": 0}, "rule": _s(128), "severity": _s(32), "time": _s(64),
        "resource": _s(1024, min_len=0), "reason": _s(256, min_len=0), "trigger": _int(-1),
        "meta": {"type": "object", "maxProperties": 64},
    }, ("index", "rule", "severity", "time", "resource", "reason", "trigger", "meta")),
    "Alerts": _obj({"alerts": _arr(ref("Alert"), MAX_AUDIT_RECORDS)}, ("alerts",)),
    "GroupLag": _obj({"group": _s(400), "stream": _s(256), "committed": _int(), "end": _int(), "lag": _int()},
                     ("group", "stream", "committed", "end", "lag")),
    "Lag": _obj({"groups": _arr(ref("GroupLag"), 100_000)}, ("groups",)),
})


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Operation:
    op_id: str
    method: str
    path: str
    summary: str
    ok: str | None  # response schema name (None: not JSON)
    status: int = 200
    body: str | None = None  # request schema name
    params: tuple[Param, ...] = ()
    tag: str = "events"
    ok_type: str = "application/json"
    description: str = ""
    body_types: tuple[tuple[str, str], ...] = ()  # (media type, schema name) beyond application/json
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 429, 503))


TOPIC = Param("topic", "path", _s(200, NAME), True)
ETYPE = Param("type", "path", _s(200, NAME), True, "Event type (CloudEvents `type`).")
BODY_ERRORS = (400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "publish",
        "POST",
        "/v1/topics/{topic}/events",
        "Publish CloudEvents (all or nothing)",
        "PublishResponse",
        body="PublishRequest",
        params=(TOPIC,),
        errors=BODY_ERRORS,
        body_types=((BATCH, "PublishRequest"), (STRUCTURED, "CloudEvent")),
        description="Implements the CloudEvents HTTP protocol binding. Structured mode "
        "(`application/cloudevents+json`): one event. Batched mode (`application/cloudevents-batch+json`) "
        "or `application/json`: an array of events. Binary mode: the attributes in `ce-*` headers "
        "(percent-encoded UTF-8), `Content-Type` is `datacontenttype`, the body is the event's JSON data "
        "(other data: 415). `ce-*` headers on a structured or batched request, a repeated `ce-*` header "
        "or a `ce-datacontenttype` header are refused (400) as ambiguous.",
    ),
    Operation(
        "consume",
        "GET",
        "/v1/topics/{topic}/events",
        "Long-poll for events",
        "ConsumeResponse",
        params=(
            TOPIC,
            Param("group", "query", _s(200, NAME), True),
            Param("max", "query", _int(1, MAX_CONSUME, default=100)),
            Param(
                "wait",
                "query",
                {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                description="Seconds to wait for the first event.",
            ),
        ),
    ),
    Operation(
        "ack",
        "POST",
        "/v1/topics/{topic}/ack",
        "Commit a consumer group's position",
        "AckResponse",
        body="AckRequest",
        params=(TOPIC,),
        errors=BODY_ERRORS,
    ),
    Operation(
        "list_schemas", "GET", "/v1/schemas", "List registered event types", "SchemaList", tag="schemas"
    ),
    Operation(
        "show_schema",
        "GET",
        "/v1/schemas/{type}",
        "Show a schema version",
        "SchemaVersion",
        tag="schemas",
        params=(ETYPE, Param("version", "query", _int(1, 2**31 - 1))),
    ),
    Operation(
        "propose_schema",
        "POST",
        "/v1/schemas/{type}/proposals",
        "Propose a schema version",
        "SchemaProposal",
        status=201,
        body="SchemaRequest",
        params=(ETYPE,),
        tag="schemas",
        errors=BODY_ERRORS,
    ),
    Operation(
        "approve_schema",
        "POST",
        "/v1/schemas/{type}/proposals/{proposal}/approve",
        "Approve a proposed schema version (a second principal)",
        "SchemaVersion",
        body="ApproveRequest",
        params=(ETYPE, Param("proposal", "path", _s(128, TOKEN_ID), True)),
        tag="schemas",
        errors=BODY_ERRORS,
    ),
    Operation(
        "check_schema",
        "POST",
        "/v1/schemas/{type}/check",
        "Check compatibility and security regressions",
        "SchemaCheck",
        body="SchemaRequest",
        params=(ETYPE,),
        tag="schemas",
        errors=BODY_ERRORS,
    ),
    Operation(
        "unwrap",
        "POST",
        "/v1/keys/unwrap",
        "Unwrap a data key for a cleared principal",
        "UnwrapResponse",
        body="UnwrapRequest",
        tag="keys",
        errors=BODY_ERRORS,
    ),
    Operation(
        "forget",
        "POST",
        "/v1/subjects/forget",
        "Crypto-shred a data subject",
        "ErasureCertificate",
        body="ForgetRequest",
        tag="subjects",
        errors=BODY_ERRORS,
    ),
    Operation(
        "hold",
        "POST",
        "/v1/subjects/hold",
        "Put a data subject under legal hold",
        "SubjectStatus",
        body="HoldRequest",
        tag="subjects",
        errors=BODY_ERRORS,
    ),
    Operation(
        "release",
        "POST",
        "/v1/subjects/release",
        "Release a legal hold",
        "SubjectStatus",
        body="SubjectRequest",
        tag="subjects",
        errors=BODY_ERRORS,
    ),
    Operation(
        "audit_checkpoint",
        "GET",
        "/v1/audit/checkpoint",
        "Latest signed tree head",
        "Checkpoint",
        tag="audit",
    ),
    Operation(
        "audit_prove",
        "GET",
        "/v1/audit/proof",
        "Inclusion proof for an audit record",
        "InclusionProof",
        params=(Param("index", "query", _int(), True), Param("tree_size", "query", _int(1))),
        tag="audit",
    ),
    Operation(
        "audit_certificate",
        "GET",
        "/v1/audit/certificates/{certificate}",
        "An erasure certificate",
        "ErasureCertificate",
        params=(Param("certificate", "path", _s(128, TOKEN_ID), True),),
        tag="audit",
    ),
    Operation(
        "explain",
        "POST",
        "/v1/policy/explain",
        "Explain an authorization decision",
        "Explanation",
        body="ExplainRequest",
        tag="policy",
        errors=BODY_ERRORS,
    ),
    Operation(
        "whoami", "GET", "/v1/whoami", "The authenticated principal", "WhoAmI", tag="ops", errors=(401, 429)
    ),
    Operation(
        "control_encrypt_keys", "POST", "/v1/control/keys/encrypt", "Data keys to encrypt with (client mode)",
        "ControlEncryptResponse", body="ControlEncryptRequest", tag="control", errors=BODY_ERRORS,
        description="For the authenticated service only: Publish on the topic and Encrypt on each class are "
        "decided by the policy; one audit record per request with counts per class.",
    ),
    Operation(
        "control_decrypt_keys", "POST", "/v1/control/keys/decrypt", "Data keys to decrypt with (client mode)",
        "ControlDecryptResponse", body="ControlDecryptRequest", tag="control", errors=BODY_ERRORS,
        description="Each key is released only if the service may Decrypt its class on the topic; a refused "
        "key is `forbidden` (audited, naming the class, never the key), a crypto-shredded one `erased`.",
    ),
    Operation(
        "control_schema", "GET", "/v1/control/schemas/{topic}/{type}", "A schema as stored (client mode)",
        "ControlSchema", tag="control", params=(TOPIC, ETYPE, Param("version", "query", _int(1, 2**31 - 1))),
        description="The client recompiles the document and checks the fingerprint.",
    ),
    Operation(
        "control_topic", "GET", "/v1/control/topics/{topic}", "A topic's layout: its partition count",
        "ControlTopic", tag="control", params=(TOPIC,),
        description="For a service that may publish or subscribe to the topic: producers route by the "
        "partition count, consumers read every partition.",
    ),
    Operation(
        "control_trust", "GET", "/v1/control/trust", "Signed trust entries for seal verification",
        "ControlTrust", tag="control",
    ),
    Operation(
        "control_audit_consistency", "GET", "/v1/control/audit/consistency",
        "The latest signed audit checkpoint and a consistency proof (audit verify in client mode)",
        "ControlAuditConsistency", tag="control",
        params=(Param("from_size", "query", _int(0, default=0),
                      description="The tree size the caller verified last (0: none); no proof for 0 or a size "
                      "at or past the tree's."),),
        description="Needs ReadAudit; recorded. The client verifies the checkpoint's signature against the audit "
        "key it pinned and the proof against the checkpoint it kept: a smaller tree is a rollback, a failing proof "
        "a fork.",
    ),
    Operation(
        "control_notices", "GET", "/v1/control/notices", "Signed notices: erasures, revocations, policy",
        "Statement", tag="control",
        params=(
            Param("after", "query", {"type": "number", "minimum": 0, "maximum": 1e12, "default": 0}),
            Param("wait", "query", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                  description="Seconds to wait for a change."),
        ),
    ),
    Operation(
        "control_decide", "POST", "/v1/control/decide", "A policy decision for the caller itself",
        "ControlDecideResponse", body="ControlDecideRequest", tag="control", errors=BODY_ERRORS,
    ),
    Operation(
        "control_register_group", "POST", "/v1/control/groups", "Register a consumer group for erasure notices",
        "ControlGroupRegistered", body="ControlGroup", tag="control", errors=BODY_ERRORS,
        description="The group (named under the caller) must acknowledge every later forget.",
    ),
    Operation(
        "control_erasures_due", "GET", "/v1/control/groups/{group}/erasures",
        "Erasures the caller's group must still purge", "ControlErasuresDue", tag="control",
        params=(Param("group", "path", _s(128, NAME), True),),
    ),
    Operation(
        "control_acknowledge", "POST", "/v1/control/groups/{group}/acks", "Acknowledge an erasure",
        "ControlAckResponse", body="ControlAck", tag="control", params=(Param("group", "path", _s(128, NAME), True),),
        errors=BODY_ERRORS,
        description="`error` (a code, never text) when the application's on_forget hooks failed.",
    ),
    Operation(
        "audit_records", "GET", "/v1/audit/records", "The newest audit records (metadata only)", "AuditRecords",
        tag="audit", params=(Param("n", "query", _int(1, MAX_AUDIT_RECORDS, default=20)),),
    ),
    Operation(
        "alerts", "GET", "/v1/alerts", "Recorded alerts (the monitor's, as audit records)", "Alerts", tag="ops",
        params=(Param("n", "query", _int(1, MAX_AUDIT_RECORDS, default=100)),),
    ),
    Operation("lag", "GET", "/v1/lag", "Consumer lag per group and stream (ReadAudit)", "Lag", tag="ops"),
    Operation("keys_status", "GET", "/v1/keys/status", "Classes, KEK versions, key counts, holds and erasures",
              "KeyStatus", tag="keys"),
    Operation(
        "dead_letters", "GET", "/v1/topics/{topic}/dlq", "A topic's dead letters (metadata, never the event)",
        "DeadLetterList", tag="events",
        params=(TOPIC, Param("resolved", "query", _int(0, 1, default=0), description="1: include redriven entries."),
                Param("max", "query", _int(1, MAX_DEAD_LETTERS, default=1000))),
        description="Needs Subscribe on the topic, as reading its events does.",
    ),
    Operation(
        "approve_service", "POST", "/v1/services/approve", "Approve a service's enrollment (client mode)",
        "ServiceGrant", body="ServiceApproval", tag="control", errors=BODY_ERRORS,
        description="Needs RotateKeys on Producer::<the service>, decided before anything is certified: then "
        "trusts the service's own keys, certifies its TLS key and returns the grant it installs.",
    ),
    Operation("healthz", "GET", "/healthz", "Liveness", "Health", tag="ops", errors=(401, 429)),
    Operation(
        "metrics",
        "GET",
        "/metrics",
        "Prometheus metrics",
        None,
        tag="ops",
        ok_type="text/plain; version=0.0.4",
        errors=(401, 429),
    ),
    Operation("openapi", "GET", "/openapi.json", "This document", None, tag="ops", errors=(401, 429)),
)

_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
_RESPONSES: dict[str, dict[str, Any]] = {
    "400": {"description": "Malformed request", "content": _PROBLEM},
    "401": {
        "description": "Not authenticated (JWT mode adds WWW-Authenticate: Bearer)",
        "content": _PROBLEM,
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "403": {"description": "Denied by policy", "content": _PROBLEM},
    "404": {"description": "No such resource", "content": _PROBLEM},
    "408": {"description": "Request body too slow", "content": _PROBLEM},
    "409": {"description": "Conflict (legal hold, approval required)", "content": _PROBLEM},
    "413": {"description": "Body or batch too large", "content": _PROBLEM},
    "415": {"description": "Unsupported content type or coding", "content": _PROBLEM},
    "422": {"description": "Event or schema fails validation", "content": _PROBLEM},
    "429": {
        "description": "Over quota",
        "content": _PROBLEM,
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    },
    "503": {"description": "A dependency (KMS, key store, transport) is unavailable", "content": _PROBLEM},
}


def _operation(op: Operation) -> dict[str, Any]:
    if op.ok is not None:
        ok_content = {op.ok_type: {"schema": ref(op.ok)}}
    elif op.op_id == "openapi":
        ok_content = {"application/json": {"schema": {"type": "object"}}}
    else:
        ok_content = {op.ok_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.status): {"description": "Success", "content": ok_content}}
    for code in sorted(op.errors):
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    responses["default"] = {"description": "Other error", "content": _PROBLEM}
    doc: dict[str, Any] = {
        "operationId": op.op_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.params:
        doc["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "schema": p.schema,
                **({"description": p.description} if p.description else {}),
            }
            for p in op.params
        ]
    if op.description:
        doc["description"] = op.description
    if op.body:
        content = {"application/json": {"schema": ref(op.body)}}
        content.update({media: {"schema": ref(name)} for media, name in op.body_types})
        doc["requestBody"] = {"required": True, "content": content}
    return doc


def document(*, max_batch: int = MAX_BATCH) -> dict[str, Any]:
    """The OpenAPI document; ``max_batch`` is the serving gateway's ``limits.max_batch_events``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eventward gateway",
            "version": VERSION,
            "description": "Central enforcement point for non-Python clients: every connection is "
            "authenticated (mTLS or OAuth2 JWT), every operation authorized, and events get the same "
            "validation, encryption, sealing, replay protection and audit as the Python SDK.",
        },
        "servers": [{"url": "https://127.0.0.1:8443"}],
        "security": [{"mutualTLS": []}, {"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": schemas(max_batch),
            "responses": {f"E{k}": v for k, v in _RESPONSES.items()},
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "Client certificate mapped to a principal.",
                },
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def render_yaml() -> str:
    import yaml

    class _Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # shared sub-schemas are written out, not as YAML anchors

    return yaml.dump(document(), Dumper=_Plain, sort_keys=False, allow_unicode=True, width=100)
