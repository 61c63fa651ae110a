"""The gateway's aiohttp application: the perimeter middleware and one thin handler per operation.

Order for every request: request id -> authenticate (before routing, so unknown paths tell an
unauthenticated client nothing) -> per-principal quota -> route -> validate path, query and body
against the OpenAPI schemas -> backend. Whatever fails becomes RFC 9457 problem details; an
unexpected exception is logged by type and code location only (its message may hold data).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import fastjsonschema
import orjson
from aiohttp import web

from eventward._internal import envelope
from eventward._internal.audit.base import DENIED, AuditSink, NullAudit
from eventward._internal.gateway import binding, openapi, problems
from eventward._internal.gateway.auth import Authenticator, Principal
from eventward._internal.gateway.backend import ErasureCertificate, GatewayBackend, SchemaVersion
from eventward._internal.gateway.config import LimitsConfig
from eventward._internal.gateway.limits import RateLimiter, TokenBucket, read_body
from eventward._internal.gateway.metrics import CONTENT_TYPE as METRICS_TYPE
from eventward._internal.gateway.metrics import GatewayMetrics
from eventward._internal.gateway.quota import SharedBuckets
from eventward.errors import (
    AuthenticationError,
    EnvelopeError,
    EventwardError,
    InputError,
    OversizeError,
    QuotaExceeded,
    RequestTimeout,
    SecurityError,
    UnsupportedMediaType,
)

log = logging.getLogger("eventward.gateway")

JSON = binding.JSON
BATCH = binding.BATCH
PRINCIPAL = web.RequestKey("principal", Principal)
_PAYLOAD = web.RequestKey("payload", object)  # the parsed body: what a problem detail must not echo
STATE = web.AppKey("eventward_gateway", object)
_UNMATCHED = "unmatched"


@dataclass
class _Validators:
    path: Callable[[Any], Any] | None
    query: Callable[[Any], Any] | None
    body: Callable[[Any], Any] | None


def _compile(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Callable[[Any], Any]:
    root = {**schema, "components": {"schemas": schemas}}
    return fastjsonschema.compile(root)


def _params_schema(params: tuple[openapi.Param, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {p.name: p.schema for p in params},
        "required": [p.name for p in params if p.required],
    }


def _validators(op: openapi.Operation, schemas: Mapping[str, Any]) -> _Validators:
    path = tuple(p for p in op.params if p.where == "path")
    query = tuple(p for p in op.params if p.where == "query")
    return _Validators(
        _compile(_params_schema(path), schemas) if path else None,
        _compile(_params_schema(query), schemas),
        _compile(openapi.ref(op.body), schemas) if op.body else None,
    )


def _check(validate: Callable[[Any], Any] | None, doc: Any, where: str) -> None:
    if validate is None:
        return
    try:
        validate(doc)
    except fastjsonschema.JsonSchemaValueException as e:
        name = where + (e.name or "data")[4:]
        msg = e.message
        msg = where + msg[4:] if msg.startswith("data") else msg
        raise InputError(msg, path=name, rule=e.rule or "") from None


def _coerce_query(op: openapi.Operation, query: Any) -> dict[str, Any]:
    """Query strings are text; numbers documented as numbers are parsed here (refusing repeats)."""
    out: dict[str, Any] = {}
    kinds = {p.name: p.schema.get("type") for p in op.params if p.where == "query"}
    for name in set(query.keys()):
        values = query.getall(name)
        if len(values) > 1:
            raise InputError(f"query parameter {name[:64]!r} is repeated", path=f"query.{name[:64]}")
        raw = values[0]
        kind = kinds.get(name)
        try:
            if kind == "integer":
                out[name] = _integer(raw)
            elif kind == "number":
                value = float(raw) if raw.isascii() else math.nan
                if not math.isfinite(value):
                    raise ValueError
                out[name] = value
            else:
                out[name] = raw
        except ValueError:
            raise InputError(
                f"query parameter {name!r} must be a {kind}", path=f"query.{name}", rule="type"
            ) from None
    return out


def _integer(raw: str) -> int:
    """JSON Schema integers include integral floats ("5.0"); Python's int() does not."""
    if not raw.isascii():
        raise ValueError
    try:
        return int(raw, 10)
    except ValueError:
        value = float(raw)
        if not (math.isfinite(value) and value.is_integer()):
            raise
        return int(value)


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class _Gateway:
    """Per-app state and the handlers (one instance per app)."""

    def __init__(
        self,
        backend: GatewayBackend,
        authenticator: Authenticator,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
        audit: AuditSink,
        *,
        trust_peer_cert: bool,
        dev: bool,
    ) -> None:
        self.backend = backend
        self.auth = authenticator
        self.limits = limits
        self.metrics = metrics
        self.audit = audit
        self.trust_peer_cert = trust_peer_cert
        self.dev = dev
        self.quota = RateLimiter(limits.rate_events_per_s, limits.burst_events, limits.max_principals)
        # Replicas on one PostgreSQL database also charge a bucket they share (gateway/quota.py).
        self.shared_quota: SharedBuckets | None = getattr(backend, "shared_quota", None)
        self.preauth = RateLimiter(
            limits.preauth_rate_per_ip_per_s, limits.preauth_burst_per_ip, limits.max_preauth_ips
        )
        self.audit_gate = TokenBucket(50.0, 200.0, time.monotonic())  # auth-failure records: no audit flood
        self.waiting = 0
        # validated against, and serving, the document with this server's configured batch limit
        self.schemas = openapi.schemas(limits.max_batch_events)
        # compiled per operation at its first request (validators_of): all of them at startup took ~2 s
        self.validators: dict[str, _Validators] = {}
        self.openapi_bytes = orjson.dumps(openapi.document(max_batch=limits.max_batch_events))

    def validators_of(self, op: openapi.Operation) -> _Validators:
        """The operation's validators, compiled from the same schemas at its first request (after
        authentication, so an anonymous client cannot make the gateway compile) and kept. Compiling
        is synchronous, so requests on the event loop never see an operation half compiled."""
        v = self.validators.get(op.op_id)
        if v is None:
            v = self.validators[op.op_id] = _validators(op, self.schemas)
        return v

    # --- perimeter ----------------------------------------------------------------------------
    def _peer_der(self, request: web.Request) -> bytes | None:
        if not self.trust_peer_cert or request.transport is None:
            return None
        ssl_object = request.transport.get_extra_info("ssl_object")
        return None if ssl_object is None else ssl_object.getpeercert(binary_form=True)

    async def _take(self, principal: str, n: int) -> None:
        """The principal's quota: this replica's bucket first (no round trip for a flood), then
        the one every replica shares, if any (QuotaExceeded with Retry-After from either)."""
        self.quota.take(principal, n)
        if self.shared_quota is None:
            return
        wait = await asyncio.get_running_loop().run_in_executor(
            None, self.shared_quota.take, principal, n, self.quota.rate, self.quota.burst)
        if wait > 0:
            raise QuotaExceeded(
                f"principal is over its quota of {self.quota.rate:g} events/s (burst {self.quota.burst:g}), "
                "counted across every gateway replica",
                retry_after=max(1, math.ceil(wait)),
            )

    def _preauth(self, request: web.Request) -> None:
        """Per client IP, before any token is parsed or verified: a flood of garbage tokens from
        one address costs a dictionary lookup each, not a signature check."""
        try:
            self.preauth.take(request.remote or "-", 1)
        except QuotaExceeded:
            self.metrics.denials.inc("preauth_rate")
            raise

    @web.middleware
    async def perimeter(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        rid = uuid.uuid4().hex
        instance = f"urn:eventward:request:{rid}"
        started = time.perf_counter()
        route = _route_name(request)
        if self.dev:
            log.warning("INSECURE: unauthenticated dev gateway served %s %s", request.method, route)
        try:
            self._preauth(request)
            principal = self.auth.authenticate(request.headers.get("Authorization"), self._peer_der(request))
            request[PRINCIPAL] = principal
            await self._take(principal.name, 1)
            resp = await handler(request)
        except EventwardError as e:
            resp = self._refused(request, e, route, instance)
        except web.HTTPException as e:
            resp = problems.from_http(e.status, instance)
            if "Allow" in e.headers:
                resp.headers["Allow"] = e.headers["Allow"]
        except Exception as e:
            log.error(
                "gateway: unexpected %s in %s at %s (request %s)", type(e).__name__, route, _where(e), rid
            )
            resp = problems.from_http(500, instance, "internal error")
        resp.headers["X-Request-Id"] = rid
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        self.metrics.requests.inc(route, request.method, str(resp.status))
        self.metrics.latency.observe(route, value=time.perf_counter() - started)
        return resp

    def _refused(self, request: web.Request, e: EventwardError, route: str, instance: str) -> web.Response:
        if isinstance(e, AuthenticationError):
            reason = str(e.details.get("reason", e.code))
            self.metrics.denials.inc(reason)
            if self.audit_gate.take(1, time.monotonic()) == 0:
                self.audit.record(
                    "authenticate", principal="-", resource=f"gateway:{route}", outcome=DENIED, reason=reason
                )
        elif isinstance(e, SecurityError | OversizeError | RequestTimeout):
            self.metrics.denials.inc(e.code)
        resp = problems.from_error(e, instance, challenge=self.auth.scheme, payload=request.get(_PAYLOAD))
        if (
            isinstance(e, OversizeError | RequestTimeout | UnsupportedMediaType)
            and not request.content.at_eof()
        ):
            resp.force_close()  # never read (or wait for) the rest of a refused body
        return resp

    # --- request parsing --------------------------------------------------------------------
    async def _json_body(self, request: web.Request, op: openapi.Operation) -> Any:
        if op.op_id == "publish":
            return await self._events(request)
        if request.content_type != JSON:
            raise UnsupportedMediaType(f"Content-Type must be {JSON}")
        raw = await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InputError(f"request body is not valid JSON (at byte {e.pos})", rule="json") from None
        request[_PAYLOAD] = doc
        return doc

    async def _events(self, request: web.Request) -> Any:
        """The publish body's events in any mode of the CloudEvents HTTP binding (see ``binding``):
        a list for the document's PublishRequest schema, whatever the mode."""
        ctype = request.content_type
        if binding.is_binary(ctype, request.headers):
            raw = await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)
            request[_PAYLOAD] = [request.headers.getall(h) for h in binding.ce_headers(request.headers)]
            event = binding.binary_event(request.headers.get("Content-Type"), request.headers, raw)
            request[_PAYLOAD] = event
            binding.check_reserved([event])
            return [event]
        if ctype not in binding.BODY_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type must be {' or '.join(binding.BODY_TYPES)}, or binary mode (ce-* headers "
                "with JSON data)"
            )
        binding.check_structured(ctype, request.headers)
        raw = await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InputError(f"request body is not valid JSON (at byte {e.pos})", rule="json") from None
        request[_PAYLOAD] = doc
        events = [doc] if ctype == binding.STRUCTURED else doc
        binding.check_reserved(events)
        return events

    async def _parse(self, request: web.Request, op: openapi.Operation) -> tuple[dict[str, Any], Any]:
        v = self.validators_of(op)
        params = dict(request.match_info)
        _check(v.path, params, "path")
        query = _coerce_query(op, request.query)
        _check(v.query, query, "query")
        params.update(query)
        body = None
        if op.body:
            body = await self._json_body(request, op)
            if op.op_id == "publish" and isinstance(body, list) and len(body) > self.limits.max_batch_events:
                raise OversizeError(
                    f"batch of {len(body)} events exceeds the limit of {self.limits.max_batch_events}",
                    limit=self.limits.max_batch_events,
                )
            _check(v.body, body, "body")
        return params, body

    def handler(self, op: openapi.Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        impl = getattr(self, f"op_{op.op_id}")

        async def handle(request: web.Request) -> web.StreamResponse:
            params, body = await self._parse(request, op)
            result = await impl(request[PRINCIPAL], params, body, request)
            if isinstance(result, web.StreamResponse):
                return result
            return web.Response(status=op.status, body=orjson.dumps(result), content_type=JSON)

        return handle

    # --- operations ---------------------------------------------------------------------------
    async def op_publish(
        self, p: Principal, params: dict[str, Any], events: list[dict[str, Any]], request: web.Request
    ) -> dict[str, Any]:
        request[_PAYLOAD] = events  # what must not be echoed (every value, attributes included)
        per_event = self.limits.max_event_bytes
        check_sizes = (request.content_length or self.limits.max_body_bytes) > per_event
        for i, given in enumerate(events):
            ev = envelope.unset_nulls(given)  # JSON format: a null attribute is unset
            for k, v in ev.items():  # extension integers may arrive as 5.0, which JSON Schema allows
                if isinstance(v, float) and k not in ("data", "data_base64"):
                    ev[k] = _integral(v)
            try:
                envelope.validate(ev)
            except EnvelopeError as e:
                raise EnvelopeError(f"events[{i}]: {e.message}", index=i) from None
            ev = events[i] = binding.json_data(ev, i)
            if check_sizes and len(orjson.dumps(ev)) > per_event:
                raise OversizeError(f"events[{i}] is larger than {per_event} bytes", index=i, limit=per_event)
        if len(events) > 1:
            await self._take(p.name, len(events) - 1)  # the request itself paid for one
        topic = params["topic"]
        result = await self.backend.publish(p.name, topic, events)
        self.metrics.events_in.inc(topic, amount=len(result.ids))
        return {"accepted": len(result.ids), "ids": result.ids, "first_offset": result.first_offset}

    async def op_consume(
        self, p: Principal, params: dict[str, Any], _: Any, request: web.Request
    ) -> dict[str, Any]:
        topic, group = params["topic"], params["group"]
        max_events = min(params.get("max", 100), self.limits.max_consume_events)
        wait = min(params.get("wait", 0.0), self.limits.max_wait_s)
        if self.waiting >= self.limits.max_waiting_consumers:
            wait = 0.0  # bounded: past the cap, long polls become plain polls
        self.waiting += 1
        try:
            result = await self.backend.consume(p.name, topic, group, max_events, wait)
        finally:
            self.waiting -= 1
        events: list[dict[str, Any]] = []
        size = 0
        for d in result.deliveries[:max_events]:
            size += len(orjson.dumps(d.event))
            if events and size > self.limits.max_consume_bytes:
                break  # the rest stays unacknowledged and is delivered next time
            events.append({"offset": d.offset, "partition": d.partition, "event": d.event})
        if len(events) > 1:
            self.quota.debit(p.name, len(events) - 1)
            if self.shared_quota is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, self.shared_quota.debit, p.name, len(events) - 1, self.quota.rate, self.quota.burst)
        self.metrics.events_out.inc(topic, amount=len(events))
        lag = result.lag + (len(result.deliveries) - len(events))
        self.metrics.lag.set(topic, group, value=lag)
        return {"events": events, "lag": lag}

    async def op_ack(
        self, p: Principal, params: dict[str, Any], body: dict[str, Any], _: web.Request
    ) -> dict[str, Any]:
        partition = _integral(body.get("partition", 0))
        committed = await self.backend.ack(p.name, params["topic"], body["group"], _integral(body["offset"]), partition)
        named = {"partition": partition} if "partition" in body else {}
        return {"group": body["group"], "committed": committed, **named}

    async def op_list_schemas(self, p: Principal, *_: Any) -> dict[str, Any]:
        items = await self.backend.list_schemas(p.name)
        return {
            "schemas": [
                {"type": s.event_type, "latest_version": s.latest_version, "pending": s.pending}
                for s in items
            ]
        }

    async def op_show_schema(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return _schema_version(await self.backend.show_schema(p.name, params["type"], params.get("version")))

    async def op_propose_schema(
        self, p: Principal, params: dict[str, Any], body: dict[str, Any], _: Any
    ) -> dict[str, Any]:
        r = await self.backend.propose_schema(
            p.name, params["type"], body["schema"], body.get("format", "json")
        )
        return {
            "proposal": r.proposal_id,
            "type": r.event_type,
            "version": r.version,
            "status": r.status,
            "security_changes": list(r.security_changes),
        }

    async def op_approve_schema(
        self, p: Principal, params: dict[str, Any], body: dict[str, Any], _: Any
    ) -> dict[str, Any]:
        v = await self.backend.approve_schema(
            p.name, params["type"], params["proposal"], body.get("security", False)
        )
        return _schema_version(v)

    async def op_check_schema(
        self, p: Principal, params: dict[str, Any], body: dict[str, Any], _: Any
    ) -> dict[str, Any]:
        r = await self.backend.check_schema(
            p.name, params["type"], body["schema"], body.get("format", "json")
        )
        return {
            "compatible": r.compatible,
            "problems": list(r.problems),
            "security_changes": list(r.security_changes),
        }

    async def op_unwrap(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        if p.method not in ("mtls", "jwt"):  # a data key never leaves over an unauthenticated connection
            raise AuthenticationError(
                "data keys are released only to mTLS- or JWT-authenticated principals",
                reason="unauthenticated",
            )
        dek = await self.backend.unwrap(p.name, body["kid"], body["class"])
        key = base64.urlsafe_b64encode(dek).rstrip(b"=").decode()
        return {"kid": body["kid"], "class": body["class"], "key": key}

    async def op_forget(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        return _certificate(await self.backend.forget(
            p.name, body["subject"], body.get("reason", ""), bool(body.get("now", False))
        ))

    async def op_hold(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        await self.backend.hold(p.name, body["subject"], body.get("reason", ""))
        return {"status": "held"}

    async def op_release(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        await self.backend.release(p.name, body["subject"])
        return {"status": "released"}

    async def op_audit_checkpoint(self, p: Principal, *_: Any) -> dict[str, Any]:
        return asdict(await self.backend.audit_checkpoint(p.name))

    async def op_audit_prove(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return asdict(await self.backend.audit_prove(p.name, params["index"], params.get("tree_size")))

    async def op_audit_certificate(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return _certificate(await self.backend.audit_certificate(p.name, params["certificate"]))

    async def op_audit_records(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return {"records": await self.backend.audit_records(p.name, params.get("n", 20))}

    async def op_alerts(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return {"alerts": await self.backend.alerts(p.name, params.get("n", 100))}

    async def op_lag(self, p: Principal, *_: Any) -> dict[str, Any]:
        return {"groups": await self.backend.lag(p.name)}

    async def op_keys_status(self, p: Principal, *_: Any) -> dict[str, Any]:
        return await self.backend.keys_status(p.name)

    async def op_dead_letters(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        topic = params["topic"]
        entries, more = await self.backend.dead_letters(
            p.name, topic, bool(params.get("resolved", 0)), params.get("max", openapi.MAX_DEAD_LETTERS // 10)
        )
        return {"topic": topic, "entries": entries, "more": more}

    async def op_approve_service(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> Any:
        if p.method not in ("mtls", "jwt"):  # trust is never granted over an unauthenticated connection
            raise AuthenticationError(
                "enrollments are approved only by mTLS- or JWT-authenticated principals", reason="unauthenticated"
            )
        grant = await self.backend.approve_service(
            p.name, body["request"].encode(), body.get("may_seal", {}), body.get("days", 30),
            body.get("control_urls", []), body.get("nats_servers", []),
        )
        return orjson.loads(grant)

    async def op_explain(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        res = body["resource"]
        context = {"event_type": body["event_type"]} if "event_type" in body else None
        d = await self.backend.explain(
            p.name, body.get("principal", p.name), body["action"], (res["kind"], res["id"]), context
        )
        kind, rid = d.resource
        return {
            "allowed": d.allowed,
            "principal": d.principal,
            "action": d.action,
            "resource": {"kind": kind, "id": rid},
            "policies": list(d.policies),
            "missing": d.missing,
            "explanation": d.explain(),
        }

    # --- control API (client mode): always as the authenticated identity ------------------------
    async def op_control_encrypt_keys(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        wanted = [(k["subject"], k["class"], k["nonces"]) for k in body["keys"]]
        got = await self.backend.control("encryption_keys", p.name, body["topic"], body["type"], wanted)
        return {"keys": [{"kid": r.kid, "dek": base64.b64encode(r.dek).decode(), "subject_hash": r.subject_hash}
                         for r in got]}

    async def op_control_decrypt_keys(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        wanted = [(k["kid"], k["class"], k.get("subject_hash")) for k in body["keys"]]
        got = await self.backend.control("decryption_keys", p.name, body["topic"], body["type"], wanted)
        return {"keys": {kid: {"dek": base64.b64encode(v).decode()} if isinstance(v, bytes) else {"error": v}
                         for kid, v in got.items()}}

    async def op_control_schema(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return await self.backend.control("schema", p.name, params["topic"], params["type"], params.get("version"))

    async def op_control_topic(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return await self.backend.control("topic", p.name, params["topic"])

    async def op_control_trust(self, p: Principal, *_: Any) -> dict[str, Any]:
        return {"entries": await self.backend.control("trust_entries", p.name)}

    async def op_control_audit_consistency(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return await self.backend.control("audit_consistency", p.name, params.get("from_size", 0))

    async def op_control_notices(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        wait = min(float(params.get("wait", 0)), self.limits.max_wait_s)  # the long-poll cap consume has too
        return await self.backend.control_notices(p.name, float(params.get("after", 0)), wait)

    async def op_control_decide(self, p: Principal, _: Any, body: dict[str, Any], __: Any) -> dict[str, Any]:
        res = body["resource"]
        allowed = await self.backend.control("decide", p.name, body["action"], (res["kind"], res["id"]),
                                             body.get("context") or {}, body.get("about"))
        return {"allowed": bool(allowed)}

    async def op_control_register_group(self, p: Principal, _: Any, body: dict[str, Any], __: Any
                                        ) -> dict[str, Any]:
        return {"group": await self.backend.control("register_group", p.name, body["group"])}

    async def op_control_erasures_due(self, p: Principal, params: dict[str, Any], *_: Any) -> dict[str, Any]:
        return {"due": await self.backend.control("erasures_due", p.name, params["group"])}

    async def op_control_acknowledge(self, p: Principal, params: dict[str, Any], body: dict[str, Any], __: Any
                                     ) -> dict[str, Any]:
        done = await self.backend.control("acknowledge", p.name, params["group"], body["subject"], body.get("error"))
        return {"completed": bool(done)}

    async def op_whoami(self, p: Principal, *_: Any) -> dict[str, Any]:
        return {"principal": p.name, "method": p.method}

    async def op_healthz(self, *_: Any) -> dict[str, Any]:
        return {"status": "ok"}

    async def op_metrics(self, *_: Any) -> web.Response:
        return web.Response(body=self.metrics.render().encode(), headers={"Content-Type": METRICS_TYPE})

    async def op_openapi(self, *_: Any) -> web.Response:
        return web.Response(body=self.openapi_bytes, content_type=JSON)


def _schema_version(v: SchemaVersion) -> dict[str, Any]:
    return {
        "type": v.event_type,
        "version": v.version,
        "format": v.format,
        "schema": v.schema,
        "status": v.status,
    }


def _certificate(c: ErasureCertificate) -> dict[str, Any]:
    doc = {"document": c.document} if c.document else {}
    return {
        **doc,
        "certificate": c.certificate_id,
        "subject_hash": c.subject_hash,
        "keys_destroyed": c.keys_destroyed,
        "issued_at": c.issued_at,
        "complete_after": c.complete_after,
        "audit_index": c.audit_index,
        "signature": c.signature,
    }


def _route_name(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route is None:
        return _UNMATCHED
    return info.route.name or _UNMATCHED


def _where(e: BaseException) -> str:
    """Where an exception was raised, without its message (which may contain values)."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename}:{f.lineno} in {f.name}"


def build_app(
    backend: GatewayBackend,
    authenticator: Authenticator,
    limits: LimitsConfig | None = None,
    *,
    metrics: GatewayMetrics | None = None,
    audit: AuditSink | None = None,
    trust_peer_cert: bool = True,
    dev: bool = False,
) -> web.Application:
    """The application. ``trust_peer_cert`` must be False unless the TLS context verifies client
    certificates (otherwise a presented certificate proves nothing)."""
    limits = limits or LimitsConfig()
    gw = _Gateway(
        backend,
        authenticator,
        limits,
        metrics or GatewayMetrics(),
        audit or NullAudit(),
        trust_peer_cert=trust_peer_cert,
        dev=dev,
    )
    app = web.Application(middlewares=[gw.perimeter], client_max_size=limits.max_body_bytes)
    app[STATE] = gw
    app.on_response_prepare.append(_no_banner)
    for op in openapi.OPERATIONS:
        app.router.add_route(op.method, op.path, gw.handler(op), name=op.op_id)
    return app


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "eventward"  # not the framework and version


def gateway_of(app: web.Application) -> _Gateway:
    gw = app[STATE]
    assert isinstance(gw, _Gateway)
    return gw
