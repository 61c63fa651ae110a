"""encryption_key's one-lookup memo (KeyService._enc_memo) serves nothing the four lookups it
stands for would not: a forget (here or elsewhere), a key found destroyed, a new version, an
expired Encrypt decision and the nonce budget all act on the very next call, and every release
and nonce is still counted. Each attack was checked to fail with its invalidation removed."""

from __future__ import annotations

import time

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward._internal.policy.base import AllowList
from eventward.errors import AccessDenied, KeyDestroyed

from .conftest import make_authz

W = dict(principal="writer", topic="orders", event_type="OrderPlaced")


def warm(svc: KeyService, subject: str, cls: str = "pii") -> str:
    """Three calls: the slow path, the path that makes the memo entry, one served by it."""
    kids = {svc.encryption_key(subject, cls, **W)[0] for _ in range(3)}
    assert len(kids) == 1 and any(k[0] == subject for k in svc._enc_memo)
    return kids.pop()


def test_the_memo_serves_the_hot_path_and_counts_every_release_and_nonce(open_svc, audit):
    svc = open_svc(KeyServiceConfig(uses_flush=10**9))
    kid = warm(svc, "cust-1")
    before = svc._uses[kid].pending
    for _ in range(50):
        assert svc.encryption_key("cust-1", "pii", nonces=3, **W)[0] == kid
    assert svc._uses[kid].pending == before + 150
    svc.flush_audit()
    counts = [r.meta["count"] for r in audit.events if r.action == "key.encrypt" and r.outcome == "ok"]
    assert sum(int(c) for c in counts) == 53


def test_attack_a_forget_here_stops_the_memo_at_once(open_svc):
    svc = open_svc()
    kid = warm(svc, "cust-2")
    svc.forget("cust-2", principal="admin", reason="gdpr")
    assert not svc._enc_memo
    assert svc.encryption_key("cust-2", "pii", **W)[0] != kid


def test_attack_a_forget_elsewhere_stops_the_memo_at_the_next_poll(tmp_path):
    home = Home(tmp_path / "h")
    cfg = KeyServiceConfig(revocation_poll=0.0)  # every call polls: "elsewhere" is seen at once
    a = KeyService.init(home, authorizer=make_authz(), audit=MemoryAudit(), config=cfg)
    b = KeyService.open(home, authorizer=make_authz(), audit=MemoryAudit(), config=cfg)
    try:
        kid = warm(a, "cust-3")
        b.forget("cust-3", principal="admin", reason="gdpr")
        assert a.encryption_key("cust-3", "pii", **W)[0] != kid
    finally:
        a.close()
        b.close()


def test_attack_a_rotation_here_is_used_by_the_next_call(open_svc):
    svc = open_svc()
    kid = warm(svc, "cust-5")
    new = svc.rotate_dek("cust-5", "pii", principal="admin")
    assert new != kid
    assert svc.encryption_key("cust-5", "pii", **W)[0] == new


def test_attack_the_nonce_budget_holds_through_the_memo(open_svc):
    svc = open_svc(KeyServiceConfig(dek_max_nonces=20, uses_flush=10**9))
    used: dict[str, int] = {}
    for _ in range(40):
        kid, _ = svc.encryption_key("cust-6", "pii", nonces=3, **W)
        used[kid] = used.get(kid, 0) + 3
    assert len(used) >= 6 and max(used.values()) <= 20


def test_attack_an_expired_encrypt_decision_is_decided_again(open_svc):
    svc = open_svc(KeyServiceConfig(decision_ttl=0.05))
    warm(svc, "cust-7")
    decided_by = time.monotonic() + 0.05  # the last decision's TTL ends before this
    svc._authz = AllowList()  # the grant is withdrawn: nobody may Encrypt
    while time.monotonic() <= decided_by:  # the memo may serve until then, as the decision did
        try:
            svc.encryption_key("cust-7", "pii", **W)
        except AccessDenied:
            break  # decided again already
    with pytest.raises(AccessDenied):  # the very next call is decided again, not served
        svc.encryption_key("cust-7", "pii", **W)


def test_attack_decisions_stay_per_principal_class_and_topic(open_svc):
    svc = open_svc()
    warm(svc, "cust-8")
    with pytest.raises(AccessDenied):  # no entry of the writer's is served to another principal
        svc.encryption_key("cust-8", "pii", principal="nobody", topic="orders", event_type="OrderPlaced")
    with pytest.raises(AccessDenied):
        svc.encryption_key("cust-8", "pii", principal="nobody", topic="other", event_type="OrderPlaced")
    assert ("cust-8", "pii", "nobody", "orders", "OrderPlaced") not in svc._enc_memo


def test_attack_counts_go_to_the_live_counters_after_they_are_flushed(open_svc):
    """_uses is cleared when full (its counts written): an entry still holding a cleared _Uses
    would count nonces nobody writes, so the budget would be undercounted."""
    svc = open_svc(KeyServiceConfig(cache_max=2, uses_flush=10**9))
    kid = warm(svc, "cust-9")
    svc.encryption_key("cust-10", "pii", **W)
    svc.encryption_key("cust-11", "pii", **W)  # a third kid: _uses flushed and cleared
    for _ in range(5):
        svc.encryption_key("cust-9", "pii", nonces=7, **W)
    svc._flush_uses()  # as close does
    assert svc.store.get_dek(kid).uses == 3 + 35


def test_a_test_clock_turns_the_memo_off(tmp_path):
    home = Home(tmp_path / "h")
    svc = KeyService.init(home, authorizer=make_authz(), audit=MemoryAudit(), clock=lambda: 1e9)
    try:
        for _ in range(3):
            svc.encryption_key("cust-12", "pii", **W)
        assert not svc._enc_memo
    finally:
        svc.close()


def test_attack_a_key_found_destroyed_is_not_served_from_the_memo(tmp_path):
    home = Home(tmp_path / "h")
    cfg = KeyServiceConfig(revocation_poll=3600.0, cache_max=2)
    a = KeyService.init(home, authorizer=make_authz(), audit=MemoryAudit(), config=cfg)
    b = KeyService.open(home, authorizer=make_authz(), audit=MemoryAudit(), config=cfg)
    try:
        kid = warm(a, "cust-13")
        other, _ = b.encryption_key("cust-14", "pii", principal="writer")
        a.decryption_key(other, "pii", principal="admin")
        b.forget("cust-13", principal="admin", reason="gdpr")
        a.cache.clear()
        with pytest.raises(KeyDestroyed):
            a.decryption_key(kid, "pii", principal="admin")
        assert not a._enc_memo
        try:
            got: str | None = a.encryption_key("cust-13", "pii", **W)[0]
        except KeyDestroyed:
            got = None  # refused: forgotten meanwhile (a retry starts a new pseudonym)
        assert got != kid
    finally:
        a.close()
        b.close()
