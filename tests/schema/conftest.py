"""Fixtures for the schema-registry tests: a real SQLite registry file per test, AllowList roles."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.policy.base import APPROVE_SCHEMA, APPROVE_SECURITY, PROPOSE_SCHEMA, AllowList
from eventward._internal.schema import Registry

SENTINEL = "SENTINEL-jane.doe@example.org-7a3e"
TYPE = "com.example.OrderPlaced"


def make_authz() -> AllowList:
    """Roles as the issue names them: author proposes, admin approves, secadmin also approves security."""
    a = AllowList()
    for p in ("alice", "carol"):  # authors
        a.grant(p, PROPOSE_SCHEMA, ("Schema", "*"))
    a.grant("bob", APPROVE_SCHEMA, ("Schema", "*"))  # schema-admin
    a.grant(
        "alice", APPROVE_SCHEMA, ("Schema", "*")
    )  # an author who is also an admin: still no self-approval
    for action in (APPROVE_SCHEMA, APPROVE_SECURITY):  # security-admin
        a.grant("sec", action, ("Schema", "*"))
    return a


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def registry(tmp_path, audit) -> Registry:
    reg = Registry(tmp_path / "registry.db", authorizer=make_authz(), audit=audit)
    yield reg
    reg.close()


def order_schema() -> dict[str, Any]:
    """A nested schema with tags on an object field, array items, and the data subject."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["order_id", "customer", "items"],
        "properties": {
            "order_id": {"type": "string", "pattern": "^ord-[0-9]{4}$"},
            "customer": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {
                    "id": {"type": "string", "maxLength": 32, "x-eventward": {"subject": True, "public": True}},
                    "email": {
                        "type": "string",
                        "maxLength": 254,
                        "format": "email",
                        "x-eventward": {"class": "pii", "deterministic": True},
                    },
                    "name": {"type": "string", "maxLength": 100, "x-eventward": {"class": "pii"}},
                    "tier": {"type": "string", "enum": ["standard", "gold"]},
                },
            },
            "items": {
                "type": "array",
                "maxItems": 50,
                "items": {
                    "type": "object",
                    "required": ["sku", "qty"],
                    "properties": {
                        "sku": {"type": "string", "pattern": "^SKU-[0-9]{4}$"},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                        "note": {"type": "string", "maxLength": 200, "x-eventward": {"class": "payment"}},
                    },
                },
            },
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 20, "x-eventward": {"class": "pii"}},
            },
        },
    }


def order_event() -> dict[str, Any]:
    return {
        "order_id": "ord-0001",
        "customer": {"id": "cust-1", "email": "jane@example.org", "name": "Jane", "tier": "gold"},
        "items": [{"sku": "SKU-0001", "qty": 2, "note": "gift"}, {"sku": "SKU-0002", "qty": 1}],
        "tags": ["vip"],
    }


def mutate(doc: dict[str, Any], path: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with the schema node at ``path`` (dotted property names, ``[]`` for
    items; a missing property is created) updated: keyword=value sets, keyword=None deletes."""
    out = copy.deepcopy(doc)
    node = out
    for seg in [s for s in path.split(".") if s]:
        name, is_items = (seg[:-2], True) if seg.endswith("[]") else (seg, False)
        if name:
            node = node["properties"].setdefault(name, {})
        if is_items:
            node = node["items"]
    for key, value in changes.items():
        key = key.replace("_", "-") if key.startswith("x_") else key
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return out


def activate(reg: Registry, doc: Any, fmt: str = "json", type_: str = TYPE) -> int:
    """Propose as alice, approve as bob and, if the change needs it, security-approve as sec."""
    p = reg.propose("alice", type_, doc, fmt)
    v = reg.approve("bob", type_, p.version)
    if p.needs_security_approval:
        v = reg.approve("sec", type_, p.version, security=True)
    assert v.state == "active"
    return v.version
