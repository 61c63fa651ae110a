"""The control plane through the gateway: key release, erasure, holds, schemas, explanations, audit.

Each operation is the deployment's own (KeyService, Deployment.forget, Registry, PolicyEngine,
AuditLog) with its authorization; what the gateway adds (ReadSchema/ReadAudit gates, who may
explain for whom, data keys only over authenticated connections) is attacked here.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from eventward._internal import demo
from eventward._internal.audit.base import DENIED
from eventward._internal.audit.certificate import verify_certificate
from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.tree import InclusionProof
from eventward._internal.audit.verify import verify_inclusion_proof
from eventward._internal.crypto import tokens
from eventward._internal.crypto.fields import ERASED
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.gateway.server import create_server
from eventward.errors import InputError

from .gw_deployment import (
    ADMIN,
    ANALYTICS,
    APPROVER,
    AUDITOR,
    AUTHOR,
    ORDERS,
    SHIPPING,
    TYPE,
    cloudevent,
    order,
    topic,
)
from .gw_support import ThreadedGateway, call


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _stored_email_token(world, t: str) -> tuple[dict[str, Any], str]:
    stored = orjson.loads(world.dep.transport.read(t, 0, 1)[0].data)
    return stored, stored["data"]["customer"]["email"]


# --- keys ------------------------------------------------------------------------------------


def test_unwrap_releases_a_dek_only_to_cleared_principals_and_audits_both(dep_world) -> None:
    t = topic()
    assert dep_world.publish(ORDERS, t, [cloudevent(order(0, customer="cust-unwrap"))]).status == 200
    stored, token = _stored_email_token(dep_world, t)
    alg, kid, blob = tokens.split(token)

    refused = dep_world.call(ANALYTICS, "POST", "/v1/keys/unwrap", {"kid": kid, "class": "pii"})
    assert refused.status == 403 and refused.json["code"] == "forbidden"
    assert "key" not in refused.json

    ok = dep_world.call(SHIPPING, "POST", "/v1/keys/unwrap", {"kid": kid, "class": "pii"})
    assert ok.status == 200 and ok.json["kid"] == kid
    # An SDK client holding no KEK decrypts the field itself with the released key.
    ad = tokens.associated_data(alg, kid, "pii", stored["ewsubject"], "customer.email", stored["id"])
    handle = tokens.TokenCipher().handle(kid, _b64url(ok.json["key"]))
    assert handle.open(alg, blob, ad) == order(0, customer="cust-unwrap")["customer"]["email"]

    records = [r for r in dep_world.audit_records() if r.meta.get("kid") == kid]
    assert (ANALYTICS, DENIED) in {(r.principal, r.outcome) for r in records if r.action == "key.unwrap"}
    released = [r for r in records if r.action == "key.release"]
    assert [(r.principal, r.outcome, r.resource) for r in released] == [(SHIPPING, "ok", "class:pii")]
    unknown = dep_world.call(SHIPPING, "POST", "/v1/keys/unwrap", {"kid": "k" * 22, "class": "pii"})
    assert unknown.status == 404


def test_unwrap_is_refused_on_an_unauthenticated_dev_listener(dep_world) -> None:
    """Even as a cleared principal: a dev listener proves nobody's identity."""
    t = topic()
    assert dep_world.publish(ORDERS, t, [cloudevent(order(0))]).status == 200
    _, token = _stored_email_token(dep_world, t)
    _, kid, _ = tokens.split(token)
    cfg = GatewayConfig.from_mapping({"host": "127.0.0.1", "port": 0})
    dev = ThreadedGateway(
        create_server(cfg, dep_world.home, dep_world.backend, dev_no_auth=True, dev_principal=SHIPPING)
    ).start()
    try:
        ctx = dep_world.ctx(SHIPPING)  # TLS to the listener, but no client certificate is asked for
        r = call(dev.port, ctx, "POST", "/v1/keys/unwrap", {"kid": kid, "class": "pii"})
        assert r.status == 401 and "key" not in r.json
    finally:
        dev.stop()


# --- subjects --------------------------------------------------------------------------------


def test_forget_through_the_gateway_erases_and_issues_a_verifiable_certificate(dep_world) -> None:
    t = topic()
    events = [cloudevent(order(i, customer="cust-forget-me" if i % 2 else "cust-keep")) for i in range(4)]
    assert dep_world.publish(ORDERS, t, events).status == 200
    subject = {"subject": "cust-forget-me"}
    assert dep_world.call(SHIPPING, "POST", "/v1/subjects/forget", subject).status == 403

    r = dep_world.call(ADMIN, "POST", "/v1/subjects/forget", subject)
    assert r.status == 200, r.json
    cert = r.json
    assert "cust-forget-me" not in r.raw.decode()
    assert cert["keys_destroyed"] >= 1 and cert["certificate"] == f"erasure-{cert['audit_index']}"
    check = verify_certificate(cert["document"], dep_world.dep.audit.verifier, log=dep_world.dep.audit)
    assert check.subject_hash == cert["subject_hash"] and check.index == cert["audit_index"]

    path = f"/v1/audit/certificates/{cert['certificate']}"
    assert dep_world.call(AUDITOR, "GET", path).json == cert
    assert dep_world.call(SHIPPING, "GET", path).status == 403
    assert dep_world.call(AUDITOR, "GET", "/v1/audit/certificates/erasure-0").status == 404

    got = dep_world.consume(SHIPPING, t, "after-forget").json["events"]
    by_customer = {d["event"]["data"]["customer"]["id"]: d["event"]["data"]["customer"] for d in got}
    assert by_customer[ERASED]["email"] == ERASED  # the subject id is pii: erased with the rest
    assert "cust-forget-me" not in by_customer
    assert by_customer["cust-keep"]["email"] != ERASED  # the other subject still reads


def test_a_legal_hold_blocks_forget_until_released_and_reasons_are_codes(dep_world) -> None:
    subject = {"subject": "cust-held"}
    assert dep_world.publish(ORDERS, topic(), [cloudevent(order(0, customer="cust-held"))]).status == 200
    free_text = dep_world.call(ADMIN, "POST", "/v1/subjects/hold", {**subject, "reason": "Jane Q. Doe case"})
    assert free_text.status == 400 and free_text.json["path"] == "body.reason"
    with pytest.raises(InputError):  # the backend checks too, whoever calls it
        asyncio.run(dep_world.backend.hold(ADMIN, "cust-held", "Jane Q. Doe case"))
    held = dep_world.call(ADMIN, "POST", "/v1/subjects/hold", {**subject, "reason": "litigation-2026-17"})
    assert held.json == {"status": "held"}
    blocked = dep_world.call(ADMIN, "POST", "/v1/subjects/forget", subject)
    assert blocked.status == 409 and blocked.json["code"] == "legal_hold"
    assert dep_world.call(SHIPPING, "POST", "/v1/subjects/release", subject).status == 403
    assert dep_world.call(ADMIN, "POST", "/v1/subjects/release", subject).json == {"status": "released"}
    assert dep_world.call(ADMIN, "POST", "/v1/subjects/forget", subject).status == 200
    assert all("Jane" not in r.body.decode() for r in dep_world.audit_records())


# --- schemas ---------------------------------------------------------------------------------


def test_schema_change_control_through_the_gateway(dep_world) -> None:
    doc = orjson.loads(demo.example("order_placed.schema.json"))
    doc["properties"]["coupon"] = {"type": "string", "maxLength": 16}
    body = {"schema": doc}
    proposed = dep_world.call(AUTHOR, "POST", f"/v1/schemas/{TYPE}/proposals", body)
    assert proposed.status == 201, proposed.json
    pid = proposed.json["proposal"]
    assert proposed.json["status"] == "pending" and proposed.json["security_changes"] == []
    approve = f"/v1/schemas/{TYPE}/proposals/{pid}/approve"
    assert dep_world.call(AUTHOR, "POST", approve, {}).status == 403  # never one's own change
    assert dep_world.call(SHIPPING, "POST", approve, {}).status == 403
    approved = dep_world.call(APPROVER, "POST", approve, {})
    assert approved.status == 200 and approved.json["status"] == "approved"
    assert approved.json["schema"]["properties"]["coupon"] == {"type": "string", "maxLength": 16}

    assert dep_world.call(AUTHOR, "GET", f"/v1/schemas/{TYPE}").json["version"] == approved.json["version"]
    assert dep_world.call(SHIPPING, "GET", f"/v1/schemas/{TYPE}").status == 403  # no ReadSchema
    listed = dep_world.call(AUTHOR, "GET", "/v1/schemas").json["schemas"]
    assert {"type": TYPE, "latest_version": approved.json["version"], "pending": 0} in listed
    assert dep_world.call(SHIPPING, "GET", "/v1/schemas").json == {"schemas": []}  # filtered, not leaked

    # Poisoning: stop encrypting e-mail. The dry run names it, and approval without the
    # security sign-off leaves the active version alone.
    poisoned = orjson.loads(orjson.dumps(doc))
    del poisoned["properties"]["customer"]["properties"]["email"]["x-eventward"]
    check = dep_world.call(AUTHOR, "POST", f"/v1/schemas/{TYPE}/check", {"schema": poisoned})
    assert check.status == 200 and any("email" in s for s in check.json["security_changes"])
    assert dep_world.call(SHIPPING, "POST", f"/v1/schemas/{TYPE}/check", {"schema": poisoned}).status == 403
    bad = dep_world.call(AUTHOR, "POST", f"/v1/schemas/{TYPE}/proposals", {"schema": poisoned})
    assert bad.status == 201 and bad.json["security_changes"]
    bad_approve = f"/v1/schemas/{TYPE}/proposals/{bad.json['proposal']}/approve"
    held = dep_world.call(APPROVER, "POST", bad_approve, {})
    assert held.status == 200 and held.json["status"] == "pending"
    active = dep_world.call(AUTHOR, "GET", f"/v1/schemas/{TYPE}").json
    assert active["version"] == approved.json["version"]
    assert "x-eventward" in active["schema"]["properties"]["customer"]["properties"]["email"]
    missing = dep_world.call(APPROVER, "POST", f"/v1/schemas/{TYPE}/proposals/p-nope/approve", {})
    assert missing.status == 404


# --- policy ----------------------------------------------------------------------------------


def _explain(world, who: str, about: str | None, **extra: Any):
    body = {"action": "Publish", "resource": {"kind": "Topic", "id": "orders.x"}, **extra}
    if about is not None:
        body["principal"] = about
    return world.call(who, "POST", "/v1/policy/explain", body)


def test_explain_own_decisions_freely_others_only_as_policy_admin_or_auditor(dep_world) -> None:
    own = _explain(dep_world, ANALYTICS, None, event_type=TYPE)
    assert own.status == 200 and own.json["allowed"] is False
    assert "{allow: publish, topic: orders.x, event_types: [OrderPlaced]}" in own.json["missing"]
    assert own.json["missing"] in own.json["explanation"]
    writer = _explain(dep_world, ORDERS, None, event_type=TYPE)
    assert writer.json["allowed"] is True and writer.json["policies"]

    snoop = _explain(dep_world, ANALYTICS, SHIPPING)
    assert snoop.status == 403 and snoop.json["code"] == "forbidden"
    for who in (AUDITOR, ADMIN):
        r = _explain(dep_world, who, ANALYTICS, event_type=TYPE)
        assert r.status == 200 and r.json["principal"] == ANALYTICS and r.json["allowed"] is False


# --- audit -----------------------------------------------------------------------------------


def test_audit_checkpoint_and_proofs_verify_offline_and_need_read_audit(dep_world) -> None:
    assert dep_world.call(SHIPPING, "GET", "/v1/audit/checkpoint").status == 403
    cp = dep_world.call(AUDITOR, "GET", "/v1/audit/checkpoint").json
    # The C2SP signed note, rebuilt from the response fields, verifies with the verifier key.
    root = base64.b64encode(bytes.fromhex(cp["root_hash"])).decode()
    body = f"{cp['key_id']}\n{cp['tree_size']}\n{root}\ntimestamp {cp['timestamp']}\n"
    sig = base64.b64encode(_b64url(cp["signature"])).decode()
    note = verify_checkpoint(f"{body}\n\u2014 {cp['key_id']} {sig}\n", dep_world.dep.audit.verifier)
    assert note.size == cp["tree_size"] > 0

    index = cp["tree_size"] - 1
    proof = dep_world.call(AUDITOR, "GET", f"/v1/audit/proof?index={index}&tree_size={cp['tree_size']}").json
    verify_inclusion_proof(
        InclusionProof(
            proof["index"],
            proof["tree_size"],
            bytes.fromhex(proof["leaf_hash"]),
            tuple(bytes.fromhex(h) for h in proof["path"]),
        ),
        note,
        record=dep_world.dep.audit.get(index).body,
    )
    far = dep_world.call(AUDITOR, "GET", f"/v1/audit/proof?index={cp['tree_size'] + 10**6}")
    assert far.status == 404
    assert dep_world.call(ANALYTICS, "GET", "/v1/audit/proof?index=0").status == 403
