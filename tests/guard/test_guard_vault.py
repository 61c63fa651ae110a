"""Claim check: a field moves to the vault under a random reference carried as ``dataref``;
the vault row is encrypted under the subject's key, and forget deletes the row too."""

from __future__ import annotations

import copy
import sqlite3

import orjson
import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.guard.vault import DATAREF_PREFIX, Vault, vault_path
from eventward.errors import AccessDenied, InputError, NotFoundError

from .conftest import ORDER, order, publish_schema

SCAN = "x-ray-scan-" + "Q" * 2000  # a large, very sensitive attachment


def test_claim_check_round_trip_and_forget(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
    vault = Vault(dep.home, dep.keys, dep.encryptor)
    try:
        data = order(1, notes=SCAN)
        slim, ref = vault.check_in(data, ["notes"], subject="c1", cls="pii", principal="orders-svc",
                                   topic="orders", event_type="OrderPlaced")
        assert "notes" not in slim and data["notes"] == SCAN and ref.startswith(DATAREF_PREFIX)
        with dep.producer("orders-svc", "orders") as producer:
            producer.send("OrderPlaced", slim, extensions={"dataref": ref})
        stored = orjson.loads(dep.transport.read("orders", 0, 1)[0].data)
        assert stored["dataref"] == ref and SCAN[:40] not in str(stored)
        with sqlite3.connect(vault_path(dep.home)) as db:
            assert SCAN[:40].encode() not in b"".join(bytes(r[0]) for r in db.execute("SELECT body FROM claims"))

        assert vault.check_out(ref, subject="c1", principal="redactor", topic="orders") == {"notes": SCAN}
        with pytest.raises(AccessDenied):  # not cleared for pii: the vault does not open either
            vault.check_out(ref, subject="c1", principal="analytics-svc", topic="orders")
        other, ref2 = vault.check_in(order(2), ["customer.email"], subject="c2", cls="pii", principal="orders-svc")
        assert "email" not in other["customer"]

        dep.forget("c1", principal="admin", reason="gdpr-art17")
        with pytest.raises(NotFoundError):
            vault.check_out(ref, subject="c1", principal="redactor", topic="orders")
        assert vault.check_out(ref2, subject="c2", principal="redactor") == {"customer.email": "user2@example.com"}
    finally:
        vault.close()


def test_attack_vault_reference_is_random_and_checked(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
    vault = Vault(dep.home, dep.keys, dep.encryptor)
    try:
        refs = {vault.check_in(order(i), ["notes"], subject="c1", cls="pii", principal="orders-svc")[1]
                for i in range(20)}
        assert len(refs) == 20 and all(len(r) == len(DATAREF_PREFIX) + 32 for r in refs)
        for bad in ("ewvault:../../keys.db", "ewvault:' OR 1=1 --", "http://x", 7):
            with pytest.raises((InputError, NotFoundError)):
                vault.check_out(bad, subject="c1", principal="redactor")  # type: ignore[arg-type]
    finally:
        vault.close()
