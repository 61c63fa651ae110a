"""The gateway part of the demo: the same deployment, used over HTTPS by services that are not Python.

Given a demo home that ``demo.setup`` prepared (policy applied, signing keys registered, the
OrderPlaced schema approved), this issues client certificates from the home's CA, starts the
gateway on 127.0.0.1 with mTLS, and then does with plain HTTPS requests (what curl does) what
the SDK part did in-process: orders-svc publishes a batch, shipping-svc consumes and acks it,
and analytics-svc, which may only read, tries to publish and is refused with an explanation
that names the missing grant. It returns facts, so the demo's tests assert what a user sees.
"""

from __future__ import annotations

import dataclasses
import http.client
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from eventward._internal import pki
from eventward._internal.demo import ANALYTICS, EVENT_TYPE, PRODUCER, SHIPPING, TOPIC, order
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.background import BackgroundGateway
from eventward._internal.gateway.config import SERVER_CERT, GatewayConfig
from eventward._internal.gateway.deployment_backend import DeploymentBackend
from eventward._internal.gateway.server import create_server
from eventward._internal.gateway.tls import ensure_home_material
from eventward._internal.home import Home

GROUP = "gateway-demo"
SOURCE = "/shop/web-checkout"
_MAX_PAGES = 50


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class GatewayDemoResult:
    url: str = ""
    published: Reply | None = None
    published_ids: list[str] = field(default_factory=list)
    consumed: list[dict[str, Any]] = field(default_factory=list)  # the batch, as shipping-svc got it
    committed: int = -1  # shipping's group offset after its acks
    denied: Reply | None = None  # analytics-svc's publish: 403 problem details
    explained: Reply | None = None  # analytics-svc asking why
    explanation: str = ""  # the explanation text, naming the missing grant
    commands: list[str] = field(default_factory=list)  # the equivalent curl commands, for display


class _Client:
    """One principal's HTTPS client: its certificate from the home's CA, a keep-alive connection."""

    def __init__(self, port: int, ca: str, cert: str, key: str) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(cert, key)
        self._conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Reply:
        headers = {"Content-Type": content_type} if body is not None else {}
        self._conn.request(method, path, body=None if body is None else orjson.dumps(body), headers=headers)
        resp = self._conn.getresponse()
        raw = resp.read()
        return Reply(resp.status, orjson.loads(raw) if raw else None)

    def close(self) -> None:
        self._conn.close()


def _clients(home: Home, port: int) -> dict[str, _Client]:
    ca = str(pki.ca_paths(home.certs)[0])
    out = {}
    for principal in (PRODUCER, SHIPPING, ANALYTICS):
        cert, key = pki.ensure_client_cert(home.certs, principal)
        out[principal] = _Client(port, ca, str(cert), str(key))
    return out


def _curl(home: Home, principal: str, url: str, method: str = "GET", data: str | None = None) -> str:
    certs = home.certs
    cmd = f"curl --cacert {pki.ca_paths(certs)[0]} --cert {certs}/clients/{principal}.crt "
    cmd += f"--key {certs}/clients/{principal}.key"
    if method != "GET":
        cmd += f" -X {method} -H 'Content-Type: application/json' -d '{data}'"
    return f"{cmd} '{url}'"


def run_gateway_demo(home: Home, n: int = 4) -> GatewayDemoResult:
    """Start the gateway over ``home``, run the three services' requests, stop it."""
    result = GatewayDemoResult()
    ensure_home_material(home, "127.0.0.1", SERVER_CERT)
    cfg = GatewayConfig.load(home)
    cfg = dataclasses.replace(cfg, host="127.0.0.1", port=0, auth="mtls")
    backend = DeploymentBackend(Deployment.open(home), owned=True)
    try:
        with BackgroundGateway(create_server(cfg, home, backend, audit=backend.audit)) as gw:
            result.url = gw.url
            clients = _clients(home, gw.port)
            try:
                _publish(home, clients[PRODUCER], result, n)
                _consume(home, clients[SHIPPING], result)
                _denied(home, clients[ANALYTICS], result)
            finally:
                for c in clients.values():
                    c.close()
    finally:
        backend.close()
    return result


def _publish(home: Home, client: _Client, result: GatewayDemoResult, n: int) -> None:
    events = [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": SOURCE,
            "type": EVENT_TYPE,
            "datacontenttype": "application/json",
            "data": order(100 + i),
        }
        for i in range(n)
    ]
    path = f"/v1/topics/{TOPIC}/events"
    result.published = client.request("POST", path, events, "application/cloudevents-batch+json")
    if result.published.status == 200:
        result.published_ids = list(result.published.body["ids"])
    result.commands.append(_curl(home, PRODUCER, result.url + path, "POST", "[{...OrderPlaced...}]"))


def _consume(home: Home, client: _Client, result: GatewayDemoResult) -> None:
    """Page through the group from its committed offset, acking each page, until the batch is seen."""
    wanted = set(result.published_ids)
    seen: dict[str, dict[str, Any]] = {}
    path = f"/v1/topics/{TOPIC}/events?" + urlencode({"group": GROUP, "max": 100, "wait": 2})
    for _ in range(_MAX_PAGES):
        page = client.request("GET", path)
        if page.status != 200 or not page.body["events"]:
            break
        for d in page.body["events"]:
            if d["event"]["id"] in wanted:
                seen[d["event"]["id"]] = d["event"]
        last = page.body["events"][-1]["offset"]
        ack = client.request("POST", f"/v1/topics/{TOPIC}/ack", {"group": GROUP, "offset": last + 1})
        result.committed = ack.body["committed"] if ack.status == 200 else result.committed
        if wanted <= set(seen):
            break
    result.consumed = [seen[i] for i in result.published_ids if i in seen]
    result.commands.append(_curl(home, SHIPPING, result.url + path))


def _denied(home: Home, client: _Client, result: GatewayDemoResult) -> None:
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/analytics/backfill",
        "type": EVENT_TYPE,
        "data": order(999),
    }
    result.denied = client.request("POST", f"/v1/topics/{TOPIC}/events", [event])
    question = {"action": "Publish", "resource": {"kind": "Topic", "id": TOPIC}, "event_type": EVENT_TYPE}
    result.explained = client.request("POST", "/v1/policy/explain", question)
    if result.explained.status == 200:
        result.explanation = result.explained.body["explanation"]
    result.commands.append(
        _curl(home, ANALYTICS, result.url + "/v1/policy/explain", "POST", orjson.dumps(question).decode())
    )
