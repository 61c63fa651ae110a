"""A home with an order schema whose free-text fields are untagged, for the guard tests; the
labelled PII corpus comes from bench/pii_corpus.py (bench/ lives at the repo root)."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  carol: {type: user, roles: [security]}
  orders-svc: {type: service, roles: [writer]}
  redactor: {type: service, roles: [redactor]}
  analytics-svc: {type: service, roles: [analyst]}
  fraud-svc: {type: service, roles: [analyst, pii-reader]}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: rotate_keys, class: "*"}
    - {allow: rotate_keys, producer: "*"}
    - {allow: read_audit}
  author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  approver:
    - {allow: [approve_schema, read_schema], schema: "*"}
  security:
    - {allow: approve_security, schema: "*"}
  writer:
    - {allow: publish, topic: orders}
    - {allow: publish, topic: orders2}
    - {allow: encrypt, class: pii}
  redactor:
    - {allow: subscribe, topic: orders}
    - {allow: decrypt, class: pii}
    - {allow: publish, topic: orders.analytics}
    - {allow: encrypt, class: pii}
  analyst:
    - {allow: subscribe, topic: orders.analytics}
  pii-reader:
    - {allow: decrypt, class: pii}
"""

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "placed_at": {"type": "string"},
        "customer": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "x-eventward": {"subject": True, "public": True}},
                "email": {"type": "string", "x-eventward": {"class": "pii"}},
                "phone": {"type": "string"},
                "card": {"type": "string"},
                "birth": {"type": "string"},
            },
            "required": ["id"],
        },
        "total": {"type": "number"},
        "notes": {"type": "string"},
        "attrs": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["order_id", "customer"],
}


def order_schema(guard: object = None) -> dict[str, Any]:
    doc = copy.deepcopy(ORDER)
    if guard is not None:
        doc["x-eventward-guard"] = guard
    return doc


def order(i: int = 1, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "order_id": f"ord-{100000 + i}",
        "placed_at": "2026-12-06T04:33:50Z",
        "customer": {"id": f"c{i}", "email": f"user{i}@example.com"},
        "total": 19.99,
        "notes": "leave at the back door",
    }
    d.update(over)
    return d


def publish_schema(dep: Deployment, type_: str, doc: dict[str, Any]) -> int:
    prop = dep.registry.propose("alice", type_, doc)
    dep.registry.approve("bob", type_, prop.version)
    if prop.needs_security_approval:
        dep.registry.approve("carol", type_, prop.version, security=True)
    return prop.version


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.init(Home(tmp_path / "home"), admin="admin", policy_yaml=POLICY)
    for p in ("orders-svc", "redactor"):
        d.trust.ensure(p, by="admin")
    yield d
    d.close()
