"""A small home for the monitoring tests: an orders topic, two legitimate producers' worth of
principals, a reader, a principal with no grants, and an audit clock the test drives."""

from __future__ import annotations

from pathlib import Path

from eventward._internal.audit import records
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  orders-svc: {type: service, roles: [writer]}
  rogue-svc: {type: service, roles: [writer]}
  shipping: {type: service, roles: [reader]}
  mallory: {type: service, roles: []}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: read_audit}
    - {allow: [forget, hold]}
    - {allow: rotate_keys, producer: "*"}
  author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  approver:
    - {allow: [approve_schema, read_schema], schema: "*"}
  writer:
    - {allow: publish, topic: orders}
  reader:
    - {allow: subscribe, topic: orders}
"""
ORDER = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "integer"}},
    "required": ["order_id", "amount"],
}
PRINCIPALS = ("admin", "alice", "bob", "orders-svc", "rogue-svc", "shipping", "mallory")


class AuditClock:
    """Drives the time audit records carry (the rules read record times), so windows are exact."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


def make_home(root: Path) -> Deployment:
    d = Deployment.init(Home(root / "home"), admin="admin", policy_yaml=POLICY)
    for p in ("orders-svc", "rogue-svc", "shipping", "mallory"):
        d.trust.ensure(p, by="admin")
    prop = d.registry.propose("alice", "Order", ORDER)
    d.registry.approve("bob", "Order", prop.version)
    return d


def patch_audit_clock(monkeypatch: object, start: float) -> AuditClock:
    clock = AuditClock(start)
    monkeypatch.setattr(records, "time", clock)  # type: ignore[attr-defined]
    monkeypatch.setattr(records, "_last_time", (-1, ""))  # type: ignore[attr-defined]
    return clock


def free_port_block(n: int = 1) -> int:
    """A port p with p..p+n-1 and p+2000.. free on 127.0.0.1 (a nats-server's client and route ports)."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 40000)
        socks: list[socket.socket] = []
        try:
            for p in [*range(base, base + n), *range(base + 2000, base + 2000 + n)]:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port block")
