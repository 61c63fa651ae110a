"""Publishing through the gateway: the SDK's enforcement over HTTP, all or nothing, refusals explained.

Events round-trip decrypted for a cleared consumer and redacted for an uncleared one.

A request whose events include one that fails validation or authorization leaves the log
exactly as it was (end offset unchanged) and the producer usable; problem details and audit
records carry metadata only, never the sentinel values the events held.
"""

from __future__ import annotations

from eventward._internal.audit.base import DENIED
from eventward._internal.crypto.fields import REDACTED

from .gw_deployment import (
    ANALYTICS,
    ORDERS,
    SENTINEL_EMAIL,
    SENTINEL_NAME,
    SHIPPING,
    STRANGER,
    cloudevent,
    order,
    topic,
)

SENTINELS = (SENTINEL_NAME, SENTINEL_EMAIL)


def test_publish_then_consume_decrypted_for_cleared_and_redacted_for_others(dep_world) -> None:
    t = topic()
    events = [cloudevent(order(i, customer=f"cust-rt-{i}")) for i in range(3)]
    r = dep_world.publish(ORDERS, t, events)
    assert r.status == 200, r.json
    assert r.json["ids"] == [e["id"] for e in events] and r.json["accepted"] == 3

    ship = dep_world.consume(SHIPPING, t, "ship")
    assert ship.status == 200, ship.json
    got = [d["event"] for d in ship.json["events"]]
    assert [e["id"] for e in got] == [e["id"] for e in events]
    assert [e["data"] for e in got] == [e["data"] for e in events]  # decrypted: cleared for pii
    assert all(e["ewproducer"] == ORDERS for e in got)

    ana = dep_world.consume(ANALYTICS, t, "ana")
    assert ana.status == 200 and len(ana.json["events"]) == 3
    _no_sentinel(ana.raw)  # the uncleared reader never receives the values, not even in transit
    for d in ana.json["events"]:
        c = d["event"]["data"]["customer"]
        assert c["name"] == REDACTED and c["email"] == REDACTED
        assert c["country"] == "GB"  # untagged fields stay readable
        assert c["id"] == REDACTED  # the data-subject id is encrypted (pii) like the other fields


def _no_sentinel(raw: bytes | str) -> None:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    for s in SENTINELS:
        assert s not in text


def test_one_invalid_event_among_good_ones_writes_nothing(dep_world) -> None:
    t = topic()
    assert dep_world.publish(ORDERS, t, [cloudevent(order(0))]).status == 200
    end = dep_world.end(t)
    bad = order(2, customer="cust-bad")
    bad["customer"]["email"] = SENTINEL_NAME  # not an e-mail address, and a sentinel
    events = [cloudevent(order(1, customer="cust-good")), cloudevent(bad), cloudevent(order(3))]
    r = dep_world.publish(ORDERS, t, events)
    assert r.status == 422 and r.json["code"] == "validation"
    assert r.json["index"] == 1 and "email" in r.json["path"]
    _no_sentinel(r.raw)
    assert dep_world.end(t) == end  # nothing of the request was stored

    # The producer is not left holding the refused request: the next one is stored alone and
    # its sequence numbers follow on (a consumer sees no gap, no leftover).
    ok = [cloudevent(order(4)), cloudevent(order(5))]
    assert dep_world.publish(ORDERS, t, ok).status == 200
    got = dep_world.consume(SHIPPING, t, "after-refusal")
    assert [d["event"]["id"] for d in got.json["events"]][1:] == [e["id"] for e in ok]
    assert [d["event"]["ewseq"] for d in got.json["events"]] == [0, 1, 2]


def test_an_unauthorized_event_type_in_the_batch_writes_nothing(dep_world) -> None:
    t = topic()
    end = dep_world.end(t)
    events = [cloudevent(order(1)), cloudevent(order(2), type_="OrderRefunded")]
    r = dep_world.publish(ORDERS, t, events)
    assert r.status == 403 and r.json["code"] == "forbidden"
    assert "OrderRefunded" in r.json["missing"]
    assert dep_world.end(t) == end


def test_a_principal_without_publish_is_refused_with_the_missing_grant(dep_world) -> None:
    t = topic()
    missing = {
        ANALYTICS: "a role of analytics-svc with {allow: publish",
        STRANGER: "principal stranger is not declared",  # authenticated, but unknown to the policy
    }
    for who, why in missing.items():
        r = dep_world.publish(who, t, [cloudevent(order(1, customer="cust-x"))])
        assert r.status == 403 and r.json["code"] == "forbidden", r.json
        assert why in r.json["missing"]
        _no_sentinel(r.raw)
    assert dep_world.end(t) == 0


def test_attributes_the_gateway_cannot_carry_are_refused_by_name(dep_world) -> None:
    t = topic()
    spoof = cloudevent(order(1), ewproducer="orders-svc")  # trying to set eventward's own metadata
    r = dep_world.publish(ORDERS, t, [cloudevent(order(0)), spoof])
    assert r.status == 400 and r.json["index"] == 1 and "'ewproducer' is reserved" in r.json["detail"]
    other = dep_world.publish(ORDERS, t, [cloudevent(order(0), traceparent="00-abc")])
    assert other.status == 400 and "traceparent" in other.json["detail"]
    binary = {k: v for k, v in cloudevent(None).items() if k != "data"} | {"data_base64": "AAEC"}
    assert dep_world.publish(ORDERS, t, [binary]).json["code"] == "bad_envelope"  # not JSON bytes
    same = cloudevent(order(1))
    twice = dep_world.publish(ORDERS, t, [same, dict(same)])
    assert twice.status == 400 and twice.json["path"] == "events[1].id"
    assert dep_world.end(t) == 0


def test_consume_without_subscribe_is_refused_and_audited(dep_world) -> None:
    t = topic()
    assert dep_world.publish(ORDERS, t, [cloudevent(order(1))]).status == 200
    for who in (ORDERS, STRANGER):  # orders-svc may write the topic, not read it
        r = dep_world.consume(who, t, "nosy")
        assert r.status == 403 and r.json["code"] == "forbidden"
        assert dep_world.ack(who, t, "nosy", 1).status == 403
    denials = [
        r
        for r in dep_world.audit_records()
        if r.action == "authorize" and r.outcome == DENIED and r.resource == f"Topic::{t}"
    ]
    assert {r.principal for r in denials} >= {ORDERS, STRANGER}
    assert {r.meta.get("requested") for r in denials} == {"Subscribe"}


def test_audit_records_gateway_publishes_and_denials_without_payloads(dep_world) -> None:
    t = topic()
    events = [cloudevent(order(i, customer=f"cust-audit-{i}")) for i in range(3)]
    assert dep_world.publish(ORDERS, t, events).status == 200
    assert dep_world.publish(ANALYTICS, t, events[:1]).status == 403
    assert dep_world.consume(SHIPPING, t, "audited").status == 200
    records = dep_world.audit_records()
    published = [r for r in records if r.action == "Publish" and r.resource == f"Topic::{t}"]
    assert len(published) == 1 and published[0].principal == ORDERS and published[0].meta["count"] == 3
    refused = [
        r
        for r in records
        if r.action == "authorize" and r.principal == ANALYTICS and r.meta.get("requested") == "Publish"
    ]
    assert refused and refused[-1].outcome == DENIED
    for r in records:
        _no_sentinel(r.body)
    _no_sentinel(dep_world.home.audit_db.read_bytes())
    _no_sentinel(dep_world.home.log_db.read_bytes())
