"""The KeyStore contract, run against both backends (SQLite file, PostgreSQL database), so neither
drifts: convergence, erasure atomicity, holds, ledger re-application, pseudonyms, re-wrap paging,
use counters, meta, and races between two handles (two processes / two replicas)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from eventward._internal.keys.pg_store import PgKeyStore
from eventward._internal.keys.sqlite_store import SQLiteKeyStore
from eventward._internal.keys.store_base import CLASS_SUBJECT, DekRecord, Erasure, KeyStore
from eventward._internal.store.pg import Database
from eventward.errors import InputError, LegalHoldError
from pg.conftest import pg_migrated_dsn, pg_server, race  # noqa: F401 - one PostgreSQL server for the session

H1, H2 = "a" * 32, "b" * 32
DEPLOYMENT = "contract-tests"


def rec(kid: str, h: str = H1, cls: str = "pii", version: int = 1, created: float = 10.0,
        kek: str | None = None) -> DekRecord:
    return DekRecord(kid, h, cls, version, kek or f"{cls}.v1", os.urandom(60), created)


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path) -> Iterator[Callable[[], KeyStore]]:
    """Opens handles on ONE store: another connection (SQLite) or another pool (a PostgreSQL replica)."""
    opened: list[KeyStore] = []
    if request.param == "sqlite":
        path = tmp_path / "keys.db"
        SQLiteKeyStore(path, create=True).close()

        def _open() -> KeyStore:
            s = SQLiteKeyStore(path, busy_timeout=5.0)
            opened.append(s)
            return s
    else:
        dsn = request.getfixturevalue("pg_migrated_dsn")  # the contract, not migrating
        Database(dsn).migrate(DEPLOYMENT)

        def _open() -> KeyStore:
            s = PgKeyStore(Database.open(dsn, deployment_id=DEPLOYMENT, pool_max=4), owns_db=True)
            opened.append(s)
            return s
    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def store(opener) -> KeyStore:
    return opener()


def test_unique_subject_class_version_converges(store):
    assert store.insert_dek(rec("k" * 22))
    assert not store.insert_dek(rec("j" * 22))  # same (subject, class, version), other kid: ignored
    assert store.current_dek(H1, "pii").kid == "k" * 22
    assert store.insert_dek(rec("m" * 22, version=2))
    assert store.current_dek(H1, "pii").version == 2
    assert store.get_dek("j" * 22) is None
    r = rec("z" * 22, h=H2)
    store.insert_dek(r)
    assert store.get_dek(r.kid) == r  # every field round-trips (bytes, floats, counters)


def test_erasure_tombstones_and_bumps_epoch_atomically(store):
    store.insert_dek(rec("k" * 22))
    store.insert_dek(rec("p" * 22, cls="payment"))
    store.insert_dek(rec("o" * 22, h=H2))
    e0 = store.epoch()
    e = store.erase_subject(H1, 20.0)
    assert e == Erasure(H1, 20.0, ("payment", "pii"), 2)
    assert store.epoch() == e0 + 1
    assert store.get_dek("k" * 22) is None and store.tombstone("k" * 22) == ("pii", 20.0)
    assert store.get_dek("o" * 22) is not None  # someone else's key survives
    assert store.erasures() == [e] and store.erased(H1) and not store.erased(H2)


def test_legal_hold_blocks_erasure_and_nothing_is_deleted(store):
    store.insert_dek(rec("k" * 22))
    store.hold(H1, "case-7", 5.0, by="legal")
    assert store.held(H1) == "case-7" and store.hold_info(H1) == ("case-7", 5.0, "legal")
    assert store.holds_count() == 1
    e0 = store.epoch()
    with pytest.raises(LegalHoldError, match="legal hold case-7 placed by legal"):
        store.erase_subject(H1, 20.0)
    assert store.get_dek("k" * 22) is not None and store.epoch() == e0 and store.erasures() == []
    assert store.release(H1) and not store.release(H1)
    assert store.erase_subject(H1, 21.0).destroyed == 1


def test_class_dek_sentinel_and_non_hashes_can_never_be_erased_or_held(store):
    store.insert_dek(rec("c" * 22, h=CLASS_SUBJECT))
    for bad in (CLASS_SUBJECT, "A" * 32, "a" * 31, "' OR 1=1 --"):
        with pytest.raises(InputError):
            store.erase_subject(bad, 1.0)
        with pytest.raises(InputError):
            store.apply_erasure(Erasure(bad, 1.0, (), 0))
        with pytest.raises(InputError):
            store.hold(bad, "x", 1.0)
    assert store.get_dek("c" * 22) is not None


def test_reapplying_an_erasure_only_removes_keys_created_before_it(store):
    store.insert_dek(rec("k" * 22, created=10.0))
    store.insert_dek(rec("n" * 22, version=2, created=30.0))  # created after the erasure
    e = Erasure(H1, 20.0, ("pii",), 1)
    assert store.apply_erasure(e) == 1
    assert store.apply_erasure(e) == 0  # already known
    assert store.get_dek("k" * 22) is None and store.get_dek("n" * 22) is not None
    assert store.erasures() == [e]


def test_failed_transaction_rolls_back_everything(store):
    e0 = store.epoch()
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_dek(rec("k" * 22))
        store.hold(H2, "x", 1.0)
        store.bump_epoch()
        with store.transaction():  # re-entrant: the outer one decides
            store.set_meta_text("k", "v")
        raise RuntimeError("boom")
    assert store.get_dek("k" * 22) is None and store.held(H2) is None
    assert store.epoch() == e0 and store.meta_text("k") is None


def test_pseudonyms_first_writer_wins_and_forget_removes_the_link(store):
    assert store.add_pseudonym("lookup-1", H1, 1.0) == H1
    assert store.add_pseudonym("lookup-1", H2, 2.0) == H1  # another process was first
    assert store.pseudonym("lookup-1") == H1 and store.pseudonym_live(H1)
    store.insert_dek(rec("k" * 22))
    assert store.legacy_subject(H1) and not store.legacy_subject(H2)
    store.erase_subject(H1, 5.0)
    assert store.pseudonym("lookup-1") is None and not store.pseudonym_live(H1)


def test_rewrap_pages_in_kid_order_and_compare_and_set(store):
    kids = sorted(f"{c}{'x' * 21}" for c in "AbC-_9z")
    for i, kid in enumerate(kids):
        store.insert_dek(rec(kid, h=f"{i:032x}", kek="pii.v1"))
    store.insert_dek(rec("K" * 22, h="f" * 32, kek="pii.v2"))
    assert store.kek_usage("pii") == {"pii.v1": len(kids), "pii.v2": 1}
    seen, after = [], ""
    while page := store.deks_to_rewrap("pii", "pii.v2", after, 3):
        seen += [r.kid for r in page]
        after = page[-1].kid
    assert seen == kids  # byte order on both backends
    assert store.rewrap(kids[0], "pii.v1", "pii.v2", b"\x01" * 60, fmt=2)
    assert not store.rewrap(kids[0], "pii.v1", "pii.v2", b"\x02" * 60)  # moved meanwhile
    r = store.get_dek(kids[0])
    assert (r.kek_id, r.wrapped, r.fmt) == ("pii.v2", b"\x01" * 60, 2)


def test_use_counters_add_and_compare_and_set(store):
    store.insert_dek(rec("c" * 22, h=CLASS_SUBJECT))
    assert store.add_uses("c" * 22, 5) == 5 and store.add_uses("c" * 22, 2) == 7
    assert store.add_uses("nokid" * 4, 1) == 0
    assert store.set_uses("c" * 22, 7, 10, b"tag")
    assert not store.set_uses("c" * 22, 7, 11, b"tag2")
    r = store.get_dek("c" * 22)
    assert (r.uses, r.uses_tag) == (10, b"tag")


def test_counts_meta_identity_and_reopen(opener):
    a = opener()
    a.insert_dek(rec("k" * 22))
    a.insert_dek(rec("p" * 22, cls="payment"))
    a.insert_dek(rec("q" * 22, h=H2, cls="payment"))
    a.erase_subject(H1, 3.0)
    assert [(c.cls, c.deks, c.subjects, c.tombstones) for c in a.counts()] == [("payment", 1, 1, 1), ("pii", 0, 0, 1)]
    a.set_meta_text("kek_since:pii", "12.5")
    a.set_meta_text("kek_since:pii", "13.5")
    b = opener()  # another process / replica sees the same store
    assert b.store_id() == a.store_id() and b.store_id().startswith("s-")
    assert b.meta_text("kek_since:pii") == "13.5" and b.epoch() == a.epoch() == 1
    assert a.intact() and b.intact()


def test_race_first_use_from_two_handles_gives_one_key(opener):
    """Two processes/replicas create the first DEK of one (subject, class) at once: one row wins,
    both converge on it."""
    a, b = opener(), opener()
    for round_ in range(5):
        h = f"{round_:032x}"
        won = race(lambda s=a, h=h, r=round_: s.insert_dek(rec(f"a{r}{'k' * 20}", h=h)),
                   lambda s=b, h=h, r=round_: s.insert_dek(rec(f"b{r}{'k' * 20}", h=h)))
        assert sorted(won) == [False, True]
        assert a.current_dek(h, "pii").kid == b.current_dek(h, "pii").kid


def test_race_two_forgets_of_one_subject_give_one_winner(opener):
    """Both erase at once: one destroys the keys, the other finds nothing left (destroyed 0);
    no key survives, and the ledger records the winner's destruction."""
    a, b = opener(), opener()
    for i, cls in enumerate(("pii", "payment", "health")):
        a.insert_dek(rec(f"{i}{'k' * 21}", cls=cls))
    results = race(lambda: a.erase_subject(H1, 10.0), lambda: b.erase_subject(H1, 11.0))
    assert sorted(e.destroyed for e in results) == [0, 3]
    winner = next(e for e in results if e.destroyed)
    assert winner.classes == ("health", "payment", "pii")
    assert a.current_dek(H1, "pii") is None and b.current_dek(H1, "health") is None
    assert winner in a.erasures() and a.epoch() == 2
