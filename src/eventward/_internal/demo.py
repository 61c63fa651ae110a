"""The guided demo: one deployment home, the whole security story, on the embedded default.

Each step returns facts (counts, reason codes, what each reader saw) so the test suite
asserts the same story the user watches; the CLI only renders them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.audit.verify import verify_log
from eventward._internal.client.types import Delivered, RunStats
from eventward._internal.crypto import seal as sealing
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import AccessDenied, ApprovalRequired

if TYPE_CHECKING:  # gateway_demo builds on this module's scenario, so import it lazily
    from eventward._internal.gateway_demo import GatewayDemoResult

TOPIC = "orders"
EVENT_TYPE = "OrderPlaced"
ADMIN, AUTHOR, APPROVER, SECURITY_ADMIN = "admin", "alice", "bob", "carol"
PRODUCER, SHIPPING, ANALYTICS = "orders-svc", "shipping-svc", "analytics-svc"

CUSTOMERS = (
    ("cust-1001", "Ada Lovelace", "ada@example.com", "12 Analytical Way, London", "GB"),
    ("cust-1002", "Grace Hopper", "grace@example.com", "1 Compiler Court, Arlington", "US"),
    ("cust-1003", "Edsger Dijkstra", "edsger@example.com", "5 Shortest Path, Nuenen", "NL"),
)
FORGOTTEN = "cust-1002"


def example(name: str) -> str:
    return resources.files("eventward._internal.examples").joinpath(name).read_text()


def order(i: int) -> dict[str, Any]:
    cid, name, email, address, country = CUSTOMERS[i % len(CUSTOMERS)]
    return {
        "order_id": f"ord-{1000 + i}",
        "customer": {"id": cid, "name": name, "email": email, "address": address, "country": country},
        "items": [{"sku": f"SKU-{100 + i}", "qty": 1 + i % 3}],
        "total": 19.5 * (1 + i % 3),
    }


def pii_values() -> list[str]:
    """Every PII value the demo sends: none may appear in the log, the audit log or the DLQ."""
    return [v for c in CUSTOMERS for v in (c[1], c[2], c[3])]


@dataclass
class View:
    """What one consumer saw: the decrypted data per event id, and how its run ended."""

    principal: str
    events: list[Delivered] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)


@dataclass
class DemoResult:
    schema_version: int = 0
    poison_findings: list[str] = field(default_factory=list)
    poison_held: bool = False
    poison_signoff_refused: bool = False  # bob (schema-admin) cannot also give the security sign-off
    produced: list[str] = field(default_factory=list)
    stored_sample: str = ""
    shipping: View | None = None
    analytics: View | None = None
    attacks: dict[str, str] = field(default_factory=dict)  # attack -> reason it was refused
    after_attacks: View | None = None
    receipt: str = ""
    certificate_index: int = -1
    after_forget: View | None = None
    gateway: GatewayDemoResult | None = None
    client_mode: ClientModeResult | None = None
    audit_size: int = 0
    audit_ok: bool = False
    checkpoint: str = ""


@dataclass
class ClientModeResult:
    """What the client-mode part showed: services that hold only their own keys."""

    directory: str = ""
    files: list[str] = field(default_factory=list)
    read: dict[str, str] = field(default_factory=dict)  # service -> a customer name it read
    refused: str = ""  # the uncleared service's direct key request


Step = Callable[[str, Any], None]


def _collect(dep: Deployment, principal: str, group: str) -> View:
    view = View(principal)
    consumer = dep.consumer(principal, TOPIC, group=group, from_beginning=True)
    try:
        view.stats = consumer.run(view.events.append, idle_timeout=0.3)
    finally:
        consumer.close()
    return view


def setup(dep: Deployment, step: Step) -> None:
    """Apply the demo policy and register signing keys for every service."""
    dep.policy.store.apply(ADMIN, example("policy.yaml"))
    dep.policy.refresh()
    step("policy", dep.policy.version)
    for p in (PRODUCER, SHIPPING, ANALYTICS):
        dep.trust.ensure(p, by=ADMIN)
    step("trust", [PRODUCER, SHIPPING, ANALYTICS])


def schemas(dep: Deployment, result: DemoResult, step: Step) -> None:
    """Two-person schema approval, then a poisoning attempt held for security approval."""
    doc = orjson.loads(example("order_placed.schema.json"))
    prop = dep.registry.propose(AUTHOR, EVENT_TYPE, doc)
    result.schema_version = dep.registry.approve(APPROVER, EVENT_TYPE, prop.version).version
    step("schema", result.schema_version)

    poisoned = orjson.loads(example("order_placed.schema.json"))
    del poisoned["properties"]["customer"]["properties"]["email"]["x-eventward"]  # stop encrypting email
    prop = dep.registry.propose(AUTHOR, EVENT_TYPE, poisoned)
    result.poison_findings = [f"{f.path}: {f.kind}" for f in prop.report.security]
    try:
        dep.registry.approve(APPROVER, EVENT_TYPE, prop.version)
    except ApprovalRequired:
        result.poison_held = True
    else:
        result.poison_held = dep.registry.active(EVENT_TYPE).version == result.schema_version
    try:  # separation of duties: the sign-off must come from a security-admin other than bob
        dep.registry.approve(APPROVER, EVENT_TYPE, prop.version, security=True)
    except AccessDenied:
        result.poison_signoff_refused = True
    dep.registry.reject(APPROVER, EVENT_TYPE, prop.version)
    step("poison", result)


def produce(dep: Deployment, result: DemoResult, step: Step, n: int = 6) -> None:
    with dep.producer(PRODUCER, TOPIC) as producer:
        for i in range(n):
            result.produced.append(producer.send(EVENT_TYPE, order(i), source="/shop/checkout"))
        producer.flush()
    first = dep.transport.read(TOPIC, 0, 1)[0]
    result.stored_sample = first.data.decode()
    step("produce", result)


def read_views(dep: Deployment, result: DemoResult, step: Step) -> None:
    result.shipping = _collect(dep, SHIPPING, SHIPPING)
    result.analytics = _collect(dep, ANALYTICS, ANALYTICS)
    step("views", result)


def attacks(dep: Deployment, result: DemoResult, step: Step) -> None:
    """Spoofed, tampered and replayed events, each refused with its reason; good events still flow."""
    end = dep.transport.end_offset(TOPIC)
    good = dep.transport.read(TOPIC, 0, end)

    # 1. Spoof: an attacker with broker access seals a batch with a key the trust registry never saw.
    forged = orjson.loads(good[0].data)
    forged["id"] = str(uuid.uuid4())
    forged["data"]["total"] = 0.01
    rogue = sealing.Signer(PRODUCER, Ed25519PrivateKey.generate())
    raw = orjson.dumps(forged)
    batch = f"spoof-{uuid.uuid4().hex}"
    blob = sealing.seal(rogue, instance="rogue", stream=TOPIC, batch=batch, first_seq=10_000, events=[raw])
    dep.transport.append(TOPIC, batch, [raw], blob)

    # 2. Replay: the first genuine batch appended again under a new batch id.
    first_batch = [r for r in good if r.batch == good[0].batch]
    dep.transport.append(TOPIC, f"replay-{uuid.uuid4().hex}", [r.data for r in first_batch], first_batch[0].seal)

    # 3. Tamper: two new genuine events, then one byte changed in storage (total 19.5 -> 99.5).
    with dep.producer(PRODUCER, TOPIC) as producer:
        producer.send(EVENT_TYPE, order(6), source="/shop/checkout")
        producer.send(EVENT_TYPE, order(7), source="/shop/checkout")
        producer.flush()
    tampered_offset = dep.transport.end_offset(TOPIC) - 2
    _tamper(dep.home, tampered_offset)

    view = _collect(dep, SHIPPING, SHIPPING)
    result.after_attacks = view
    dlq = dep.dead_letters(SHIPPING, TOPIC)
    for entry in dlq.list(principal=SHIPPING):
        if entry.batch == batch:
            result.attacks["spoofed event"] = entry.reason
        elif entry.batch.startswith("replay-"):
            result.attacks.setdefault("replayed event", entry.reason)
        elif entry.offset == tampered_offset:
            result.attacks["tampered event"] = entry.reason
    step("attacks", result)


def _tamper(home: Home, offset: int) -> None:
    db = sqlite3.connect(home.log_db)
    try:
        (data,) = db.execute("SELECT data FROM events WHERE stream=? AND offset=?", (TOPIC, offset)).fetchone()
        db.execute(
            "UPDATE events SET data=? WHERE stream=? AND offset=?",
            (bytes(data).replace(b'"total":19.5', b'"total":99.5'), TOPIC, offset),
        )
        db.commit()
    finally:
        db.close()


def forget(dep: Deployment, result: DemoResult, step: Step) -> None:
    done = dep.forget(FORGOTTEN, principal=ADMIN, reason="gdpr-art17")
    result.receipt = done.receipt.statement()
    result.certificate_index = done.certificate.index
    result.after_forget = _collect(dep, SHIPPING, f"{SHIPPING}.reread")
    step("forget", result)


def gateway(dep: Deployment, result: DemoResult, step: Step) -> None:
    """The same enforcement for any language: mTLS clients publish, consume, and get denied with reasons."""
    from eventward._internal.gateway_demo import run_gateway_demo

    result.gateway = run_gateway_demo(dep.home)
    step("gateway", result)


def client_mode(dep: Deployment, result: DemoResult, step: Step) -> None:
    """Two services enrolled with their own keys read the log through the control plane's
    answers (in-process here; over mutual TLS from `eventward serve` on a real deployment)."""
    import shutil

    from eventward._internal.control.client import LocalControlAPI
    from eventward._internal.control.connect import Client
    from eventward._internal.control.identity import ServiceIdentity
    from eventward._internal.control.plane import ControlPlane

    root = dep.home.root.parent / f"{dep.home.root.name}-services"
    shutil.rmtree(root, ignore_errors=True)
    out = ClientModeResult(directory=str(root))
    plane = ControlPlane.open(dep)
    try:
        for principal in (SHIPPING, ANALYTICS):
            ident = ServiceIdentity.create(root / principal, principal)
            ident.install(plane.approve(ADMIN, ident.request_path.read_bytes(), {}))
            client = Client(ident, LocalControlAPI(plane, principal), dep.transport, follow_notices=False)
            try:
                seen: list[Delivered] = []
                consumer = client.consumer(TOPIC, group=f"{principal}.client", from_beginning=True)
                try:
                    consumer.run(seen.append, idle_timeout=0.3, max_events=1)
                finally:
                    consumer.close()
                out.read[principal] = seen[0].data["customer"]["name"] if seen else ""
                if principal == ANALYTICS:
                    token = orjson.loads(dep.transport.read(TOPIC, 0, 1)[0].data)["data"]["customer"]["name"]
                    answer = client.api.decryption_keys(TOPIC, EVENT_TYPE, [(token.split(".")[2], "pii", None)])
                    out.refused = next(iter(answer.values()))  # type: ignore[assignment]
            finally:
                client.close()
        out.files = sorted(p.name for p in (root / SHIPPING).iterdir())
    finally:
        plane.close()
    result.client_mode = out
    step("client_mode", result)


def audit(dep: Deployment, result: DemoResult, step: Step) -> None:
    dep.audit.flush()
    cp = dep.audit.checkpoint()
    result.checkpoint = cp.text
    report = verify_log(dep.audit, public_key=dep.audit.verifier.vkey())
    result.audit_ok = report.ok
    result.audit_size = dep.audit.size()
    step("audit", result)


def run(home: Home, step: Step | None = None) -> DemoResult:
    """Run the whole story in ``home`` (created fresh). ``step(name, data)`` reports progress."""
    report: Step = step or (lambda name, data: None)
    result = DemoResult()
    dep = Deployment.init(home, admin=ADMIN)
    try:
        setup(dep, report)
        schemas(dep, result, report)
        produce(dep, result, report)
        read_views(dep, result, report)
        attacks(dep, result, report)
        forget(dep, result, report)
        gateway(dep, result, report)
        client_mode(dep, result, report)
        audit(dep, result, report)
    finally:
        dep.close()
    return result

