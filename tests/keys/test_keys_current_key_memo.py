"""The key service's one-lookup memo of a subject's current encryption key (``_hot``) never
outlives what the two caches it stands for would hold: a key found destroyed is never served
from it, a rotation elsewhere is picked up after the cache TTL, and a forget drops it."""

from __future__ import annotations

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward.errors import KeyDestroyed

from .conftest import make_authz


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def two_services(tmp_path, clock: Clock, **cfg) -> tuple[KeyService, KeyService]:
    home = Home(tmp_path / "h")
    config = KeyServiceConfig(revocation_poll=3600.0, **cfg)  # no poll: only the memo's own rules act
    a = KeyService.init(home, authorizer=make_authz(), audit=MemoryAudit(), clock=clock, config=config)
    b = KeyService.open(home, authorizer=make_authz(), audit=MemoryAudit(), clock=clock, config=config)
    return a, b


def test_attack_a_key_found_destroyed_is_never_served_from_the_memo(tmp_path):
    """Another process forgets the subject; this one learns it from the tombstone when it reads
    the key (evicted from its key cache meanwhile) before its next poll. Encrypting for the
    subject must then not use the erased key, though the memo still held it."""
    clock = Clock()
    a, b = two_services(tmp_path, clock, cache_max=2)
    try:
        kid, _ = a.encryption_key("cust-1", "pii", principal="writer")
        a.encryption_key("cust-2", "pii", principal="writer")
        assert a.encryption_key("cust-1", "pii", principal="writer")[0] == kid  # served from the memo
        other, _ = b.encryption_key("cust-9", "pii", principal="writer")
        a.decryption_key(other, "pii", principal="admin")  # evicts cust-1's key from a's key cache
        b.forget("cust-1", principal="admin", reason="gdpr")
        with pytest.raises(KeyDestroyed):
            a.decryption_key(kid, "pii", principal="admin")  # the tombstone: marked destroyed here
        try:
            got, _ = a.encryption_key("cust-1", "pii", principal="writer")
        except KeyDestroyed:
            return  # refused: the subject was forgotten meanwhile (a retry starts a new pseudonym)
        assert got != kid
    finally:
        a.close()
        b.close()


def test_a_rotation_elsewhere_is_used_once_the_cache_ttl_passed(tmp_path):
    clock = Clock()
    a, b = two_services(tmp_path, clock, cache_ttl=60.0)
    try:
        kid1, _ = a.encryption_key("cust-2", "pii", principal="writer")
        kid2 = b.rotate_dek("cust-2", "pii", principal="admin")
        assert kid2 != kid1
        assert a.encryption_key("cust-2", "pii", principal="writer")[0] == kid1  # within the TTL, as documented
        clock.now += 61
        assert a.encryption_key("cust-2", "pii", principal="writer")[0] == kid2
    finally:
        a.close()
        b.close()


def test_a_forget_here_drops_the_memo_and_caching_off_keeps_it_empty(tmp_path):
    clock = Clock()
    a, b = two_services(tmp_path, clock)
    try:
        kid, _ = a.encryption_key("cust-3", "pii", principal="writer")
        assert a._hot
        a.forget("cust-3", principal="admin", reason="gdpr")
        assert not a._hot
        assert a.encryption_key("cust-3", "pii", principal="writer")[0] != kid
    finally:
        a.close()
        b.close()
    clock2 = Clock()
    c, d = two_services(tmp_path / "off", clock2, cache_max=0)
    try:
        c.encryption_key("cust-4", "pii", principal="writer")
        assert not c._hot
    finally:
        c.close()
        d.close()
