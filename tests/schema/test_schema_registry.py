"""Change control: two-person approval, authorization, immutability, concurrency, caching, audit."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from eventward._internal.schema import Mode, Registry
from eventward.errors import (
    AccessDenied,
    ConflictError,
    InputError,
    NotFoundError,
    SchemaError,
    SchemaIncompatible,
    SchemaSecurityError,
)
from support_wait import wait_until

from .conftest import SENTINEL, TYPE, activate, make_authz, mutate, order_event, order_schema

WORKER = Path(__file__).with_name("schema_worker.py")


def worker(db: Path, *args: object) -> dict:
    out = subprocess.run(
        [sys.executable, str(WORKER), str(db), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def test_first_version_needs_a_second_principal(registry):
    p = registry.propose("alice", TYPE, order_schema())
    assert p.version == 1 and not p.needs_security_approval
    with pytest.raises(AccessDenied, match="second principal"):
        registry.approve("alice", TYPE, 1)  # alice holds ApproveSchema, but proposed it
    with pytest.raises(NotFoundError):
        registry.active(TYPE)
    v = registry.approve("bob", TYPE, 1)
    assert v.state == "active" and v.approvals == (("schema", "bob"),)
    assert registry.active(TYPE).version == 1


def test_unauthorized_proposer_refused_and_nothing_stored(registry, audit):
    with pytest.raises(AccessDenied) as ei:
        registry.propose("mallory", TYPE, order_schema())
    assert "ProposeSchema" in ei.value.message
    assert registry.list() == []
    rec = audit.events[-1]
    assert (rec.action, rec.principal, rec.outcome, rec.meta["needed"]) == (
        "schema.propose",
        "mallory",
        "denied",
        "ProposeSchema",
    )


def test_unauthorized_approver_refused(registry):
    p = registry.propose("alice", TYPE, order_schema())
    for who in ("carol", "mallory"):  # an author without ApproveSchema, and a stranger
        with pytest.raises(AccessDenied):
            registry.approve(who, TYPE, p.version)
    assert registry.get(TYPE, 1).state == "proposed" and registry.get(TYPE, 1).approvals == ()


def test_grants_are_per_subject(tmp_path):
    authz = make_authz()
    authz.revoke("bob", "ApproveSchema", ("Schema", "*"))
    authz.grant("bob", "ApproveSchema", ("Schema", "other.Type"))
    with Registry(tmp_path / "r.db", authorizer=authz) as reg:
        p = reg.propose("alice", TYPE, order_schema())
        with pytest.raises(AccessDenied):
            reg.approve("bob", TYPE, p.version)


def test_one_open_proposal_per_subject(registry):
    registry.propose("alice", TYPE, order_schema())
    with pytest.raises(ConflictError, match="awaiting approval"):
        registry.propose("carol", TYPE, mutate(order_schema(), "customer.name", maxLength=10))


def test_same_proposal_again_gets_the_same_answer(registry):
    """A retried propose (the first committed though its caller saw an error, e.g. a COMMIT that
    timed out on PostgreSQL): the same proposer and document get the pending version back, not a
    ConflictError or a second version; anyone else's proposal is still refused."""
    first = registry.propose("alice", TYPE, order_schema())
    again = registry.propose("alice", TYPE, order_schema())
    assert (again.version, again.fingerprint, again.proposer) == (first.version, first.fingerprint, "alice")
    assert [v.version for v in registry.versions(TYPE)] == [first.version]
    with pytest.raises(ConflictError, match="awaiting approval"):
        registry.propose("carol", TYPE, order_schema())


def test_identical_document_refused(registry):
    activate(registry, order_schema())
    reformatted = orjson.dumps(order_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    with pytest.raises(ConflictError, match="exact schema"):
        registry.propose("alice", TYPE, reformatted)


def test_reject_withdraw_and_final_states(registry):
    activate(registry, order_schema())
    p = registry.propose("alice", TYPE, mutate(order_schema(), "customer.name", description="v2"))
    with pytest.raises(AccessDenied):
        registry.reject("carol", TYPE, p.version)  # neither proposer nor approver
    assert registry.reject("bob", TYPE, p.version).state == "rejected"
    for action in (
        lambda: registry.approve("sec", TYPE, p.version),
        lambda: registry.reject("bob", TYPE, p.version),
    ):
        with pytest.raises(ConflictError, match="rejected"):
            action()
    p2 = registry.propose("alice", TYPE, mutate(order_schema(), "customer.name", description="v3"))
    assert p2.version == 3  # numbers are never reused
    assert registry.reject("alice", TYPE, p2.version).state == "rejected"  # withdrawing one's own
    assert registry.active(TYPE).version == 1
    with pytest.raises(ConflictError, match="active"):
        registry.approve("bob", TYPE, 1)


def test_incompatible_change_refused_with_every_finding(registry, audit):
    activate(registry, order_schema())
    doc = mutate(order_schema(), "customer.name", maxLength=5)
    doc = mutate(doc, "items[].qty", maximum=10)
    with pytest.raises(SchemaIncompatible) as ei:
        registry.propose("alice", TYPE, doc)
    assert {(f.path, f.kind) for f in ei.value.findings} == {
        ("$.customer.name", "max_length_lowered"),
        ("$.items[].qty", "maximum_lowered"),
    }
    assert len(registry.versions(TYPE)) == 1
    assert audit.events[-1].meta["compat_findings"] == 2


def test_mode_changes_are_authorized_and_validated(registry):
    with pytest.raises(AccessDenied):
        registry.set_mode("carol", TYPE, Mode.NONE)
    with pytest.raises(SchemaError, match="unknown compatibility mode"):
        registry.set_mode("bob", TYPE, "LAX")
    assert registry.set_mode("bob", TYPE, "full_transitive") is Mode.FULL_TRANSITIVE
    assert registry.mode(TYPE) is Mode.FULL_TRANSITIVE
    assert registry.mode("other.Type") is Mode.BACKWARD


def test_mode_tightened_after_proposal_blocks_activation(registry, audit):
    activate(registry, order_schema())
    registry.set_mode("bob", TYPE, Mode.NONE)
    p = registry.propose("alice", TYPE, mutate(order_schema(), "customer.name", maxLength=5))
    registry.set_mode("bob", TYPE, Mode.BACKWARD)
    with pytest.raises(SchemaIncompatible):
        registry.approve("bob", TYPE, p.version)
    v = registry.get(TYPE, p.version)
    assert v.state == "proposed" and v.approvals == ()  # the refused approval left nothing behind
    last = audit.events[-1]
    assert (last.action, last.outcome, last.reason) == ("schema.approve", "denied", "incompatible")
    assert registry.active(TYPE).version == 1


def test_check_is_a_dry_run(registry, audit):
    activate(registry, order_schema())
    n = len(audit.events)
    report = registry.check(TYPE, mutate(order_schema(), "customer.email", x_eventward=None))
    assert report.compatible and [f.kind for f in report.security] == ["tag_removed"]
    assert report.baseline == 1 and report.compared == (1,)
    assert len(registry.versions(TYPE)) == 1 and len(audit.events) == n


def test_reads(registry):
    with pytest.raises(NotFoundError):
        registry.get(TYPE)
    activate(registry, order_schema())
    registry.propose("alice", TYPE, mutate(order_schema(), "customer.name", maxLength=100, description="x"))
    assert registry.get(TYPE).version == 1  # the active one by default
    assert registry.get(TYPE, 2).state == "proposed"
    with pytest.raises(NotFoundError):
        registry.get(TYPE, 9)
    (info,) = registry.list()
    assert (info.type, info.active, info.pending, info.versions, info.fmt) == (TYPE, 1, 2, 2, "json")
    v = registry.validate(TYPE, order_event())
    assert v.version == 1 and v.spec.subject_path == "customer.id" and v.max_event_bytes == 64 * 1024


@pytest.mark.parametrize("bad_type", ["", "-x", "a b", "x" * 300, "a\nb"])
def test_bad_subject_names_refused(registry, bad_type):
    with pytest.raises(InputError):
        registry.propose("alice", bad_type, order_schema())


def test_bad_principal_refused(registry):
    for p in ("", "a\x00b", "x" * 300):
        with pytest.raises(InputError):
            registry.propose(p, TYPE, order_schema())


def test_versions_are_immutable_in_the_database(registry, tmp_path):
    activate(registry, order_schema())
    db = sqlite3.connect(tmp_path / "registry.db")
    for sql in (
        "UPDATE versions SET document = x'7b7d' WHERE version = 1",
        "UPDATE versions SET fingerprint = 'sha256:00' WHERE version = 1",
        "DELETE FROM versions",
        "DELETE FROM approvals",
        "UPDATE versions SET state = 'proposed' WHERE version = 1",
    ):
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(sql)
    db.close()


def test_tampered_document_detected(registry, tmp_path):
    activate(registry, order_schema())
    weaker = orjson.dumps(mutate(order_schema(), "customer.email", x_eventward=None))
    db = sqlite3.connect(tmp_path / "registry.db")
    db.execute("DROP TRIGGER versions_immutable")  # an attacker with write access to the file
    db.execute("UPDATE versions SET document = ? WHERE version = 1", (weaker,))
    db.commit()
    db.close()
    with (
        Registry(tmp_path / "registry.db", authorizer=make_authz()) as fresh,
        pytest.raises(SchemaSecurityError, match="fingerprint"),
    ):
        fresh.active(TYPE)


def test_tampered_report_cannot_skip_the_security_approval(registry, tmp_path):
    activate(registry, order_schema())
    p = registry.propose("alice", TYPE, mutate(order_schema(), "customer.email", x_eventward=None))
    assert p.needs_security_approval
    db = sqlite3.connect(tmp_path / "registry.db")
    db.execute("DROP TRIGGER versions_immutable")
    clean = orjson.dumps({**p.report.to_dict(), "security": []}).decode()
    db.execute("UPDATE versions SET report = ? WHERE version = ?", (clean, p.version))
    db.commit()
    db.close()
    assert registry.approve("bob", TYPE, p.version).state == "proposed"  # findings recomputed on approval
    assert registry.active(TYPE).version == 1


def test_another_instance_notices_activation(tmp_path):
    path = tmp_path / "r.db"
    with (
        Registry(path, authorizer=make_authz(), refresh_interval=0.2) as writer,
        Registry(path, authorizer=make_authz(), refresh_interval=0.5) as reader,
    ):
        activate(writer, order_schema())
        assert reader.active(TYPE).version == 1
        activate(writer, mutate(order_schema(), "customer.phone", type="string"))
        assert reader.active(TYPE).version == 1  # cached within the refresh interval
        wait_until(lambda: reader.active(TYPE).version == 2, what="reader sees version 2")


@pytest.mark.timeout(60)
def test_process_notices_activation_by_another_process(tmp_path):
    path = tmp_path / "r.db"
    with Registry(path, authorizer=make_authz(), refresh_interval=0.1) as reg:
        assert worker(path, "activate", TYPE, 10) == {"ok": True, "version": 1}
        v1 = reg.active(TYPE)
        assert v1.document["properties"]["a"]["maxLength"] == 10
        assert worker(path, "activate", TYPE, 20)["ok"]
        v2 = wait_until(lambda: (v := reg.active(TYPE)).version == 2 and v, what="activation noticed")
        assert v2.document["properties"]["a"]["maxLength"] == 20
        assert reg.get(TYPE, 1).state == "superseded"


@pytest.mark.timeout(60)
def test_concurrent_proposals_from_two_processes(tmp_path):
    path = tmp_path / "r.db"
    Registry(path, authorizer=make_authz()).close()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(path), "propose", TYPE, str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (10, 20)
    ]
    results = [orjson.loads(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert sorted(r["ok"] for r in results) == [False, True]
    assert next(r for r in results if not r["ok"])["code"] == "conflict"
    with Registry(path, authorizer=make_authz()) as reg:
        assert [v.version for v in reg.versions(TYPE)] == [1]


def test_audit_records_are_metadata_only(registry, audit):
    doc = mutate(order_schema(), "customer.email", description=SENTINEL)
    activate(registry, doc)
    p = registry.propose("alice", TYPE, mutate(doc, "customer.email", x_eventward=None))
    with pytest.raises(AccessDenied):
        registry.approve("alice", TYPE, p.version)
    registry.approve("bob", TYPE, p.version)
    registry.approve("sec", TYPE, p.version, security=True)
    actions = [(e.action, e.outcome) for e in audit.events]
    assert actions == [
        ("schema.propose", "ok"),
        ("schema.approve", "ok"),
        ("schema.activate", "ok"),
        ("schema.propose", "ok"),
        ("schema.approve", "denied"),
        ("schema.approve", "ok"),
        ("schema.approve", "ok"),
        ("schema.activate", "ok"),
    ]
    propose = audit.events[3]
    assert propose.meta["findings"] == "tag_removed" and propose.meta["security_findings"] == 1
    assert propose.meta["fingerprint"] == p.fingerprint and propose.resource == f"Schema::{TYPE}"
    assert audit.events[4].reason == "self_approval"
    for e in audit.events:
        assert all(v is None or isinstance(v, str | int | float | bool) for v in e.meta.values())
        assert SENTINEL not in repr(e)
