"""Erasure certificates: issued, logged, proven; every forgery and rollback is refused."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import orjson
import pytest

from eventward._internal.audit.certificate import (
    ACTION,
    Certificate,
    erasure_claims,
    find_certificate,
    issue_erasure_certificate,
    verify_certificate,
)
from eventward._internal.audit.log import AuditLog
from eventward._internal.home import Home
from eventward._internal.keys.service import ErasureReceipt
from eventward.errors import AuditIntegrityError, NotFoundError, ValidationError

from .helpers import backup, fill, restore

SUBJECT_HASH = "9f86d081884c7d659a2feaa0c55ad015"


def receipt(**over) -> dict:
    base = {
        "subject_hash": SUBJECT_HASH,
        "time": time.time(),
        "classes": ["pii", "payment"],
        "destroyed": 3,
        "kek_epochs": {"pii": 2, "payment": 1},
        "purged": True,
    }
    base.update(over)
    return base


@pytest.fixture
def issued(log):
    fill(log, 20)
    return log, issue_erasure_certificate(log, receipt(), reason_code="gdpr_art17")


def test_certificate_is_logged_proven_and_verifiable_offline(issued):
    log, cert = issued
    assert cert.index == 20 and cert.subject_hash == SUBJECT_HASH
    record = log.get(20)
    assert record.action == ACTION and record.meta["subject_hash"] == SUBJECT_HASH
    assert cert.claims["classes"] == ["payment", "pii"] and cert.claims["reason_code"] == "gdpr_art17"
    check = verify_certificate(cert.to_json(), log.verifier.vkey())
    assert (check.index, check.checkpoint_size, check.log_size) == (20, 21, None)
    fill(log, 5, start=100)
    later = log.checkpoint().text
    check = verify_certificate(cert, log.verifier, log=log, checkpoint=later)
    assert (check.log_size, check.later_checkpoint_size) == (26, 26)
    assert find_certificate(log, SUBJECT_HASH) == Certificate.from_json(cert.to_json())


def test_the_key_services_erasure_receipt_is_accepted_as_is(log):
    r = ErasureReceipt(SUBJECT_HASH, time.time(), ("pii",), 2, {"pii": 4}, True)
    cert = issue_erasure_certificate(log, r)
    assert cert.claims["dek_versions_destroyed"] == 2 and cert.claims["kek_epochs"] == {"pii": 4}
    assert cert.claims["purged"] is True
    verify_certificate(cert, log.verifier, log=log)


def test_unknown_receipt_fields_are_never_copied(log):
    @dataclass
    class Receipt:
        subject_hash: str
        time: float
        classes: tuple
        destroyed: int
        kek_epochs: dict
        raw_subject: str = "alice@example.com"

    cert = issue_erasure_certificate(log, Receipt(SUBJECT_HASH, time.time(), ("pii",), 1, {"pii": 1}))
    assert "alice" not in cert.to_json()
    assert b"alice" not in log.path.read_bytes() + log.path.with_name("audit.db-wal").read_bytes()


@pytest.mark.parametrize(
    ("over", "path"),
    [
        ({"subject_hash": "alice@example.com"}, "meta.subject_hash"),
        ({"classes": "pii"}, "classes"),
        ({"classes": ["p i i"]}, "classes"),
        ({"destroyed": -1}, "dek_versions_destroyed"),
        ({"destroyed": True}, "dek_versions_destroyed"),
        ({"kek_epochs": {"pii": [1]}}, "kek_epochs.pii"),
        ({"time": None}, "time"),
        ({"time": "yesterday"}, "time"),
        ({"time": 1e300}, "time"),
        ({"time": float("nan")}, "time"),
        ({"purged": "yes"}, "purged"),
        ({"reason_code": "Because I said so"}, "reason_code"),
    ],
)
def test_malformed_receipts_are_refused_before_anything_is_logged(log, over, path):
    with pytest.raises(ValidationError) as ei:
        issue_erasure_certificate(log, receipt(**over))
    assert ei.value.path == path
    assert "alice" not in str(ei.value)
    assert log.size() == 0


def _doc(cert: Certificate) -> dict:
    return orjson.loads(cert.to_json())


def _resign_free(doc: dict) -> str:
    return orjson.dumps(doc).decode()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["certificate"].update(classes=["pii"]),
        lambda d: d["certificate"].update(subject_hash="0" * 32),
        lambda d: d["certificate"].update(dek_versions_destroyed=99),
        lambda d: d["certificate"].update(kek_epochs={"pii": 9, "payment": 9}),
        lambda d: d["certificate"].update(log="eventward.audit/0000000000000000"),
        lambda d: d.update(signature=base64.b64encode(bytes(64)).decode()),
        lambda d: d.update(record=d["record"].replace('"outcome":"ok"', '"outcome":"denied"')),
        lambda d: d["proof"]["hashes"].__setitem__(0, base64.b64encode(bytes(32)).decode()),
        lambda d: d["proof"]["hashes"].pop(),
        lambda d: d["proof"].update(index=3),
        lambda d: d["proof"].update(tree_size=22),
        lambda d: d.update(checkpoint=d["checkpoint"].replace("\n21\n", "\n22\n")),
        lambda d: d.update(extra="field"),
        lambda d: d["certificate"].update(note="x"),
    ],
    ids=[
        "classes",
        "subject",
        "destroyed",
        "epochs",
        "log",
        "signature",
        "record",
        "proof-hash",
        "proof-short",
        "proof-index",
        "proof-size",
        "checkpoint",
        "extra-field",
        "extra-claim",
    ],
)
def test_forged_certificates_are_rejected(issued, mutate):
    log, cert = issued
    doc = _doc(cert)
    mutate(doc)
    with pytest.raises(AuditIntegrityError):
        verify_certificate(_resign_free(doc), log.verifier)


def test_a_genuine_record_and_proof_of_another_event_cannot_back_a_certificate(issued):
    log, cert = issued
    cp = log.checkpoint()
    doc = _doc(cert)
    doc.update(record=log.get(7).body.decode(), proof=log.prove(7, cp.size).to_dict(), checkpoint=cp.text)
    with pytest.raises(AuditIntegrityError, match="does not announce"):
        verify_certificate(_resign_free(doc), log.verifier)


def test_certificate_from_another_audit_log_is_rejected(tmp_path, issued):
    log, _ = issued
    with AuditLog.open(Home(tmp_path / "other")) as other:
        foreign = issue_erasure_certificate(other, receipt())
        with pytest.raises(AuditIntegrityError):
            verify_certificate(foreign, log.verifier)
        # the victim's claims, signed by the other key
        doc = _doc(foreign)
        doc["certificate"]["log"] = log.verifier.name
        with pytest.raises(AuditIntegrityError):
            verify_certificate(_resign_free(doc), log.verifier)


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"certificate": {}}', "{" * 70_000])
def test_garbage_certificate_documents_are_integrity_errors(issued, text):
    log, _ = issued
    with pytest.raises(AuditIntegrityError):
        verify_certificate(text, log.verifier)


def test_rolled_back_log_no_longer_backs_the_certificate(home, tmp_path):
    copy = tmp_path / "before.db"
    with AuditLog.open(home) as log:
        fill(log, 10)
        backup(home.audit_db, copy)
        cert = issue_erasure_certificate(log, receipt())
        vkey = log.verifier.vkey()
    restore(copy, home.audit_db)  # someone restores a backup from before the erasure
    with AuditLog.open(home) as log:
        with pytest.raises(AuditIntegrityError, match="rollback"):
            verify_certificate(cert, vkey, log=log)
        fill(log, 30, start=500)  # ...and grows past it again: now it is a fork
        with pytest.raises(AuditIntegrityError):
            verify_certificate(cert, vkey, log=log)


def test_a_forked_checkpoint_of_the_same_size_is_rejected(home, tmp_path):
    copy = tmp_path / "before.db"
    with AuditLog.open(home) as log:
        fill(log, 20)
        backup(home.audit_db, copy)
        cert = issue_erasure_certificate(log, receipt())
        vkey = log.verifier.vkey()
    restore(copy, home.audit_db)
    with AuditLog.open(home) as log:  # the same key signs a different history of the same size
        fill(log, 1, start=999)
        fork = log.checkpoint().text
        with pytest.raises(AuditIntegrityError, match="fork"):
            verify_certificate(cert, vkey, checkpoint=fork)
        with pytest.raises(AuditIntegrityError):
            verify_certificate(cert, vkey, log=log)


def test_a_larger_later_checkpoint_is_only_vouched_for_with_the_log(issued):
    log, cert = issued
    fill(log, 3, start=300)
    later = log.checkpoint().text
    assert verify_certificate(cert, log.verifier, checkpoint=later).later_checkpoint_size is None
    assert verify_certificate(cert, log.verifier, checkpoint=later, log=log).later_checkpoint_size == 24


def test_a_checkpoint_older_than_the_certificate_is_rejected(log):
    fill(log, 5)
    early = log.checkpoint().text
    cert = issue_erasure_certificate(log, receipt())
    with pytest.raises(AuditIntegrityError, match="predates"):
        verify_certificate(cert, log.verifier, checkpoint=early)


def test_newest_certificate_is_found_by_subject_hash(issued):
    log, first = issued
    second = issue_erasure_certificate(log, receipt(classes=["health"]))
    assert find_certificate(log, SUBJECT_HASH).index == second.index != first.index
    with pytest.raises(NotFoundError):
        find_certificate(log, "0" * 32)


def test_claims_normalize_times_and_aliases():
    claims = erasure_claims("eventward.audit/x", receipt(time="2025-03-01T10:00:00+00:00"), reason_code="court_order")
    assert claims["erased_at"] == "2025-03-01T10:00:00.000Z" and claims["reason_code"] == "court_order"
    assert claims["dek_versions_destroyed"] == 3
