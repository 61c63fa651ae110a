"""Trust registry: authorized and audited key changes, rotation, revocation, key files."""

from __future__ import annotations

import os

import pytest

from eventward._internal.client.trust import ACTIVE, RETIRED, REVOKED, TrustRegistry
from eventward.errors import AccessDenied, ConflictError, KeyFilePermissionError, NotFoundError

from .client_world import ADMIN, PRODUCER, StrictAudit, grants


@pytest.fixture
def trust(tmp_path):
    from eventward._internal.home import Home

    t = TrustRegistry.open(Home(tmp_path), grants(), StrictAudit())
    yield t
    t.close()


def test_register_rotate_revoke_lifecycle(trust):
    s1 = trust.register(PRODUCER, by=ADMIN)
    path1 = trust.home.producer_keys / f"{PRODUCER}.{s1.kid}.key"
    assert path1.stat().st_mode & 0o777 == 0o600
    assert trust.public_key(s1.kid)[0] == PRODUCER and trust.public_key(s1.kid)[2] == ACTIVE
    with pytest.raises(ConflictError):
        trust.register(PRODUCER, by=ADMIN)
    s2 = trust.rotate(PRODUCER, by=ADMIN)
    assert s2.kid != s1.kid and trust.signer_for(PRODUCER).kid == s2.kid
    assert trust.public_key(s1.kid)[2] == RETIRED and not path1.exists()  # retired keys never sign again
    trust.revoke(s2.kid, by=ADMIN)
    assert trust.public_key(s2.kid)[2] == REVOKED
    with pytest.raises(NotFoundError):
        trust.signer_for(PRODUCER)
    actions = [(e.action, e.outcome, e.meta.get("kid")) for e in trust._audit.events]
    assert actions == [
        ("trust.register", "ok", s1.kid),
        ("trust.rotate", "ok", s2.kid),
        ("trust.revoke", "ok", s2.kid),
    ]


def test_key_changes_need_rotate_keys(trust):
    s = trust.register(PRODUCER, by=ADMIN)
    for attempt in (
        lambda: trust.register("other", by=PRODUCER),
        lambda: trust.rotate(PRODUCER, by=PRODUCER),
        lambda: trust.revoke(s.kid, by="intruder"),
    ):
        with pytest.raises(AccessDenied):
            attempt()
    assert trust.public_key(s.kid)[2] == ACTIVE and trust.list() == trust.list(PRODUCER)
    denied = [e for e in trust._audit.events if e.outcome == "denied"]
    assert [e.principal for e in denied] == [PRODUCER, PRODUCER, "intruder"]


def test_unknown_kid_and_unsafe_key_file(trust):
    with pytest.raises(NotFoundError):
        trust.public_key("ed25519-000000000000000000000000")
    s = trust.register(PRODUCER, by=ADMIN)
    os.chmod(trust.home.producer_keys / f"{PRODUCER}.{s.kid}.key", 0o644)
    with pytest.raises(KeyFilePermissionError):
        trust.signer_for(PRODUCER)


def test_principal_names_cannot_escape_the_key_directory(trust):
    from eventward.errors import InputError

    for bad in ("../evil", "a/b", "", ".hidden"):
        with pytest.raises(InputError):
            trust.register(bad, by=ADMIN)


def test_key_purposes_and_registries_from_before_them(tmp_path):
    """Keys registered before purposes existed keep sealing; a principal holds one active key per purpose."""
    import sqlite3

    from eventward._internal.client.trust import DEAD_LETTER, SEAL
    from eventward._internal.home import Home
    from eventward.errors import InputError

    home = Home(tmp_path)
    t = TrustRegistry.open(home, grants(), StrictAudit())
    old = t.register(PRODUCER, by=ADMIN)
    t.close()
    db = sqlite3.connect(home.trust_db)  # the table as it was: no purpose column
    db.executescript(
        "CREATE TABLE keys_v1(kid TEXT PRIMARY KEY, principal TEXT NOT NULL, public BLOB NOT NULL, "
        "status TEXT NOT NULL, created REAL NOT NULL, changed REAL NOT NULL, changed_by TEXT NOT NULL);"
        "INSERT INTO keys_v1 SELECT kid, principal, public, status, created, changed, changed_by FROM keys;"
        "DROP TABLE keys; ALTER TABLE keys_v1 RENAME TO keys;"
    )
    db.close()
    t = TrustRegistry.open(home, grants(), StrictAudit())
    assert t.info(old.kid).purpose == t.resolve(old.kid).purpose == SEAL
    assert t.signer_for(PRODUCER).kid == t.dead_letter_signer(PRODUCER).kid == old.kid  # no dead-letter key yet
    dl = t.register(PRODUCER, by=ADMIN, purpose=DEAD_LETTER)  # a second purpose is no conflict
    assert t.dead_letter_signer(PRODUCER).kid == dl.kid and t.signer_for(PRODUCER).kid == old.kid
    rotated = t.rotate(PRODUCER, by=ADMIN, purpose=DEAD_LETTER)  # rotating one purpose leaves the other
    assert t.info(dl.kid).status == RETIRED and t.info(old.kid).status == ACTIVE
    assert [k.purpose for k in t.list(PRODUCER)] == [SEAL, DEAD_LETTER, DEAD_LETTER]
    assert t.signer_for(PRODUCER, DEAD_LETTER).kid == rotated.kid
    with pytest.raises(ConflictError):
        t.register(PRODUCER, by=ADMIN, purpose=DEAD_LETTER)
    with pytest.raises(InputError):
        t.register("reader-svc", by=ADMIN, purpose="anything")
    with pytest.raises(NotFoundError):
        t.dead_letter_signer("reader-svc")
    t.close()
