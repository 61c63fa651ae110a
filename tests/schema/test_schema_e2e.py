"""End to end: the field spec derived from schema tags drives encryption; real audit log records."""

from __future__ import annotations

from eventward._internal.audit import AuditLog, verify_log
from eventward._internal.crypto import tokens
from eventward._internal.crypto.fields import REDACTED, FieldEncryptor
from eventward._internal.home import Home
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT, AllowList
from eventward._internal.schema import Registry

from .conftest import SENTINEL, TYPE, activate, make_authz, mutate, order_event, order_schema


def test_field_spec_from_tags_drives_encryption(registry):
    activate(registry, order_schema())
    version = registry.active(TYPE)
    data = order_event()
    data["customer"]["email"] = SENTINEL
    version.validate(data)  # plaintext, producer side, before encryption

    keys = MemoryKeys(authorizer=AllowList([("support", DECRYPT, ("Class", "pii"))]))
    enc = FieldEncryptor(keys)
    sealed, subject_hash = enc.encrypt("evt-1", data, version.spec, principal="producer")

    assert subject_hash == keys.subject_hash("cust-1")
    for value in (
        sealed["customer"]["email"],
        sealed["customer"]["name"],
        sealed["items"][0]["note"],
        sealed["tags"][0],
    ):
        assert tokens.is_token(value)
    assert SENTINEL not in repr(sealed)
    assert sealed["order_id"] == "ord-0001" and sealed["items"][1] == {"sku": "SKU-0002", "qty": 1}
    assert sealed["customer"]["id"] == "cust-1" and sealed["customer"]["tier"] == "gold"

    clear, report = enc.decrypt("evt-1", sealed, version.spec, subject_hash, principal="support")
    assert clear["customer"]["email"] == SENTINEL and clear["tags"] == ["vip"]
    assert clear["items"][0]["note"] == REDACTED  # support is cleared for pii, not payment
    assert report.redacted_classes == frozenset({"payment"})


def test_pending_poisoned_schema_does_not_weaken_encryption(registry):
    activate(registry, order_schema())
    registry.propose("alice", TYPE, mutate(order_schema(), "customer.email", x_eventward=None))
    registry.approve("bob", TYPE, 2)  # without the security approval it stays proposed
    sealed, _ = FieldEncryptor(MemoryKeys()).encrypt(
        "evt-2", order_event(), registry.active(TYPE).spec, principal="producer"
    )
    assert tokens.is_token(sealed["customer"]["email"])


def test_registry_records_land_in_the_real_audit_log(tmp_path):
    home = Home(tmp_path / "home").ensure()
    doc = mutate(order_schema(), "customer.name", description=SENTINEL)
    with AuditLog.open(home) as audit, Registry.open(home, authorizer=make_authz(), audit=audit) as reg:
        activate(reg, doc)
        reg.propose("alice", TYPE, mutate(doc, "customer.name", x_eventward=None))
        reg.approve("bob", TYPE, 2)
        reg.set_mode("bob", TYPE, "FULL")
    assert verify_log(home.audit_db).records_checked == 6
    with AuditLog.open_readonly(home.audit_db) as log:
        records = [log.get(i) for i in range(log.size())]
    assert [r.action for r in records] == [
        "schema.propose",
        "schema.approve",
        "schema.activate",
        "schema.propose",
        "schema.approve",
        "schema.mode",
    ]
    assert records[3].meta["findings"] == "tag_removed"
    audit_files = [p for p in home.root.iterdir() if p.name.startswith("audit") and p.is_file()]
    assert audit_files
    for path in audit_files:  # the schema document (here, a description) never reaches the audit log
        assert SENTINEL.encode() not in path.read_bytes(), path.name
