"""A real deployment home behind a real mTLS gateway, for the phase-2 tests.

The home is made by ``Deployment.init`` with a test policy (the demo's principals, with topic
grants by prefix so each test can use a topic of its own), the demo's OrderPlaced schema
approved by two principals, signing keys for the services, and certificates issued by the
home's own CA. The gateway runs ``DeploymentBackend`` on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import sqlite3
import ssl
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from eventward._internal import demo, pki
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.config import SERVER_CERT, GatewayConfig
from eventward._internal.gateway.deployment_backend import DeploymentBackend
from eventward._internal.gateway.metrics import GatewayMetrics
from eventward._internal.gateway.server import create_server
from eventward._internal.gateway.tls import ensure_home_material
from eventward._internal.home import Home

from .gw_support import Reply, ThreadedGateway, call

ADMIN, AUTHOR, APPROVER, AUDITOR, FUZZER = "admin", "alice", "bob", "auditor", "fuzzer"
ORDERS, SHIPPING, ANALYTICS, STRANGER = "orders-svc", "shipping-svc", "analytics-svc", "stranger"
TYPE = "OrderPlaced"

POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  alice: {type: user, roles: [schema-author]}
  bob: {type: user, roles: [schema-admin, security-admin]}
  auditor: {type: user, roles: [auditor]}
  fuzzer: {type: service, roles: [everything]}
  orders-svc: {type: service, roles: [order-writer]}
  shipping-svc: {type: service, roles: [order-reader, pii-reader]}
  analytics-svc: {type: service, roles: [order-reader]}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: rotate_keys, class: "*"}
    - {allow: rotate_keys, producer: "*"}
    - {allow: read_audit}
  auditor:
    - {allow: read_audit}
  everything:
    - {allow: [publish, subscribe], topic: "*"}
    - {allow: decrypt, class: "*"}
    - {allow: [propose_schema, approve_schema, approve_security, read_schema], schema: "*"}
    - {allow: [forget, hold]}
    - {allow: manage_policy}
    - {allow: read_audit}
  schema-author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  schema-admin:
    - {allow: [approve_schema, read_schema], schema: "*"}
  security-admin:
    - {allow: approve_security, schema: "*"}
  order-writer:
    - {allow: publish, topic: orders, match: prefixed, event_types: [OrderPlaced]}
    - {allow: encrypt, class: pii, event_types: [OrderPlaced]}
  order-reader:
    - {allow: subscribe, topic: orders, match: prefixed}
  pii-reader:
    - {allow: decrypt, class: pii}
"""

SENTINEL_NAME = "Sentinel Zq7Xw Person"
SENTINEL_EMAIL = "sentinel.zq7xw@example.org"


def order(i: int, customer: str | None = None, **over: Any) -> dict[str, Any]:
    """The demo's OrderPlaced data; ``customer`` names the data subject (and carries sentinels)."""
    data = demo.order(i)
    if customer is not None:
        data["customer"] = {
            "id": customer,
            "name": SENTINEL_NAME,
            "email": SENTINEL_EMAIL,
            "address": "1 Sentinel Road",
            "country": "GB",
        }
    data.update(over)
    return data


def cloudevent(data: Any, *, id_: str | None = None, type_: str = TYPE, **attrs: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_ or str(uuid.uuid4()),
        "source": "/tests/gateway/shop",
        "type": type_,
        "datacontenttype": "application/json",
        "data": data,
        **attrs,
    }


class World:
    """One home, its deployment, and a started gateway over it."""

    def __init__(self, root: Path, *, gateway: dict[str, Any] | None = None, policy_yaml: str = POLICY) -> None:
        self.home = Home(root / "home")
        self.dep = Deployment.init(self.home, admin=ADMIN, policy_yaml=policy_yaml)
        for p in (ORDERS, SHIPPING, ANALYTICS, FUZZER):
            self.dep.trust.ensure(p, by=ADMIN)
        schema = orjson.loads(demo.example("order_placed.schema.json"))
        prop = self.dep.registry.propose(AUTHOR, TYPE, schema)
        self.dep.registry.approve(APPROVER, TYPE, prop.version)
        ensure_home_material(self.home, "127.0.0.1", SERVER_CERT)
        self.ca = pki.ca_paths(self.home.certs)[0]
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.backend = DeploymentBackend(self.dep, poll_interval=0.05)
        self.metrics = GatewayMetrics()
        cfg = GatewayConfig.from_mapping(
            {
                "host": "127.0.0.1",
                "port": 0,
                "limits": {"rate_events_per_s": 100_000.0, "burst_events": 100_000},
                **(gateway or {}),
            }
        )
        server = create_server(cfg, self.home, self.backend, audit=self.backend.audit, metrics=self.metrics)
        self.gw = ThreadedGateway(server).start()

    @property
    def port(self) -> int:
        return self.gw.port

    def ctx(self, principal: str) -> ssl.SSLContext:
        """A client TLS context with ``principal``'s certificate from the home's CA."""
        if principal not in self._contexts:
            cert, key = pki.ensure_client_cert(self.home.certs, principal)
            ctx = ssl.create_default_context(cafile=str(self.ca))
            ctx.load_cert_chain(str(cert), str(key))
            self._contexts[principal] = ctx
        return self._contexts[principal]

    # --- the HTTP API, as a client would call it ----------------------------------------------
    def call(self, principal: str, method: str, path: str, body: Any = None) -> Reply:
        return call(self.port, self.ctx(principal), method, path, body)

    def publish(self, principal: str, topic: str, events: list[dict[str, Any]]) -> Reply:
        return self.call(principal, "POST", f"/v1/topics/{topic}/events", events)

    def consume(
        self, principal: str, topic: str, group: str, max_events: int = 100, wait: float = 0
    ) -> Reply:
        q = urlencode({"group": group, "max": max_events, "wait": wait})
        return self.call(principal, "GET", f"/v1/topics/{topic}/events?{q}")

    def ack(self, principal: str, topic: str, group: str, offset: int) -> Reply:
        return self.call(principal, "POST", f"/v1/topics/{topic}/ack", {"group": group, "offset": offset})

    # --- looking behind the gateway's back ----------------------------------------------------
    def end(self, topic: str) -> int:
        return self.dep.transport.end_offset(topic)

    def dead_letters(self, principal: str, topic: str) -> list[Any]:
        return self.dep.dead_letters(principal, topic).list(principal=principal)

    def log_db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home.log_db, isolation_level=None)

    def audit_records(self) -> list[Any]:
        self.dep.audit.flush()
        return self.dep.audit.tail(100_000)

    def close(self) -> None:
        try:
            self.gw.stop()
        finally:
            self.backend.close()
            self.dep.close()


def topic() -> str:
    """A fresh topic under the granted prefix, so tests do not see each other's events."""
    return f"orders.t{uuid.uuid4().hex[:10]}"
