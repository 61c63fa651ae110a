"""The read batch's key path for a consumer of many subjects: rows read raw (wrapped_deks, no
DekRecord), their AADs built in one pass (row_aad), one unwrap_many, the service cache read under
one lock (get_many), and TokenCipher.opening keeping a key only from its second use. Each is only
cheaper: a forgotten, destroyed, tampered or moved key is refused exactly as before, typed."""

from __future__ import annotations

import sqlite3

import pytest

from eventward._internal.crypto.tokens import GCM, SIV, TokenCipher, key_context
from eventward._internal.keys.cache import LruTtlCache
from eventward._internal.keys.dek import AAD_V1, AAD_V2, WRAPPED_COLUMNS, dek_aad, row_aad
from eventward._internal.keys.service import KeyServiceConfig, _row_aad
from eventward.errors import AccessDenied, KeyDestroyed, KeyIntegrityError, KeyNotFound

from .conftest import SENTINEL


def _keys(svc, n: int, cls: str = "pii") -> list[tuple[str, bytes]]:
    return [svc.encryption_key(f"subject-{i}", cls, principal="writer") for i in range(n)]


def _cold(svc) -> None:
    svc._drop_caches()  # every key a miss: the consumer of a million subjects


def test_wrapped_rows_match_the_records_and_their_aad(svc):
    """wrapped_deks returns exactly the DekRecord's columns it names, and row_aad the bytes
    _row_aad builds from the record, in both AAD formats."""
    kids = [k for k, _ in _keys(svc, 5)]
    rows = svc.store.wrapped_deks([*kids, "A" * 22, kids[0]])
    assert sorted(rows) == sorted(kids)  # the absent kid is absent, the repeated one read once
    for kid in kids:
        rec, row = svc.store.get_dek(kid), rows[kid]
        assert len(row) == len(WRAPPED_COLUMNS)
        assert row == (rec.kid, rec.cls, rec.subject_hash, rec.version, rec.kek_id, rec.wrapped, rec.created, rec.fmt)
        assert row_aad(row) == _row_aad(rec) == dek_aad(kid, rec.cls, rec.subject_hash, rec.version, rec.created,
                                                        fmt=AAD_V2)
        old = (*row[:7], AAD_V1)
        assert row_aad(old) == dek_aad(kid, rec.cls, rec.subject_hash)
    assert svc.store.wrapped_deks([]) == {}


def test_batch_outcomes_equal_the_per_key_outcomes(open_svc):
    svc = open_svc(KeyServiceConfig(cache_ttl=0))  # no cache: both paths go to the store each time
    keys = _keys(svc, 6)
    pay, _ = svc.encryption_key("subject-0", "payment", principal="writer")
    svc.forget("subject-5", principal="admin")
    wanted = [(k, "pii", None) for k, _ in keys] + [(pay, "payment", None), (keys[0][0], "payment", None),
                                                    ("A" * 22, "pii", None), ("bad kid!", "pii", None)]
    got = svc.decryption_keys(wanted, principal="admin")
    for kid, cls, _ in wanted:
        try:
            want: object = svc.decryption_key(kid, cls, principal="admin")
        except (KeyDestroyed, KeyNotFound) as e:
            want = type(e)
        out = got[kid, cls]
        assert (out if type(out) is bytes else type(out)) == want
    assert [got[k, "pii"] for k, _ in keys[:5]] == [d for _, d in keys[:5]]
    assert isinstance(got[keys[5][0], "pii"], KeyDestroyed)
    denied = svc.decryption_keys(wanted[:2], principal="reader-of-nothing")
    assert all(isinstance(v, AccessDenied) for v in denied.values())


def test_attack_forgotten_subject_key_is_never_served_by_the_batch_path(open_svc):
    """Resolved once (and cached), then forgotten: the next batch gets KeyDestroyed for it, from
    the store's tombstone, not the service cache or the cipher's memory of keys met once."""
    svc = open_svc()
    (kid, dek), (other, other_dek) = _keys(svc, 2)
    _cold(svc)
    wanted = [(kid, "pii", None), (other, "pii", None)]
    first = svc.decryption_keys(wanted, principal="admin")
    assert first[kid, "pii"] == dek and svc.cache.get(kid) == ("pii", dek)
    cipher = TokenCipher()
    cipher.opening(kid, dek, GCM, "pii", None)  # met once: nothing with key material is kept
    assert not cipher._bound and not cipher._handles and all(dek not in k for k in cipher._once)
    svc.forget("subject-0", principal="admin")
    again = svc.decryption_keys(wanted, principal="admin")
    assert isinstance(again[kid, "pii"], KeyDestroyed) and again[other, "pii"] == other_dek
    assert svc.cache.get(kid) == ("pii", None)  # remembered as destroyed, never as a key
    assert svc.store.wrapped_deks([kid]) == {}  # the row itself is gone


def test_attack_tampered_or_moved_wrapped_dek_is_refused_typed_in_the_batch(open_svc, home, audit):
    """A database writer flips a bit of one wrapped DEK, moves another row's wrapped bytes onto a
    third, and stores a fourth's columns with the wrong types: each of those keys is refused as
    KeyIntegrityError (audited, not cached), the untouched key still decrypts."""
    svc = open_svc()
    keys = _keys(svc, 5)
    db = sqlite3.connect(home.keys_db)
    wrapped = dict(db.execute("SELECT kid, wrapped FROM deks WHERE class = 'pii'").fetchall())
    flipped = bytearray(wrapped[keys[0][0]])
    flipped[-3] ^= 1
    db.execute("UPDATE deks SET wrapped = ? WHERE kid = ?", (bytes(flipped), keys[0][0]))
    db.execute("UPDATE deks SET wrapped = ? WHERE kid = ?", (wrapped[keys[1][0]], keys[2][0]))  # moved
    db.execute("UPDATE deks SET wrapped = 'not bytes' WHERE kid = ?", (keys[3][0],))
    db.commit()
    db.close()
    _cold(svc)
    start = len(audit.events)
    got = svc.decryption_keys([(k, "pii", None) for k, _ in keys], principal="admin")
    bad = [keys[0][0], keys[2][0], keys[3][0]]
    assert [type(got[k, "pii"]) for k in bad] == [KeyIntegrityError] * 3
    assert got[keys[4][0], "pii"] == keys[4][1]
    assert got[keys[1][0], "pii"] == keys[1][1]  # the source of the moved bytes is untouched
    for k in bad:
        assert svc.cache.get(k) is None
        assert SENTINEL not in str(got[k, "pii"]) and "not bytes" not in str(got[k, "pii"])
    denied = [r for r in audit.events[start:] if r.action == "key.unwrap" and r.outcome == "denied"]
    assert sum(int(r.meta["count"]) for r in denied) == 3  # the type-broken row too
    assert {r.reason for r in denied} == {KeyIntegrityError.code}


def test_attack_malformed_row_columns_are_refused_typed_not_a_traceback(open_svc, home):
    """Columns of the wrong type (SQLite stores what a writer gives it): KeyIntegrityError for that
    key alone, the rest of the batch unaffected."""
    svc = open_svc()
    keys = _keys(svc, 3)
    db = sqlite3.connect(home.keys_db)
    db.execute("UPDATE deks SET subject_hash = 7 WHERE kid = ?", (keys[0][0],))  # int: no .encode()
    db.execute("UPDATE deks SET created = 'yesterday' WHERE kid = ?", (keys[1][0],))  # not a number
    db.commit()
    db.close()
    _cold(svc)
    got = svc.decryption_keys([(k, "pii", None) for k, _ in keys], principal="admin")
    assert isinstance(got[keys[0][0], "pii"], KeyIntegrityError)
    assert isinstance(got[keys[1][0], "pii"], KeyIntegrityError)
    assert got[keys[2][0], "pii"] == keys[2][1]


def test_get_many_is_get_of_each_key():
    now = [100.0]
    cache: LruTtlCache[str, int] = LruTtlCache(3, 10.0, lambda: now[0])
    cache.put_many([("a", 1), ("b", 2), ("c", 3)])
    now[0] = 105.0
    cache.put("d", 4)  # evicts "a"
    assert cache.get_many(["a", "b", "d", "x"]) == [None, 2, 4, None]
    assert (cache.hits, cache.misses) == (2, 2)
    cache.put("e", 5)  # "c" is now the least recently used (b and d were just read): evicted
    assert cache.get_many(["c", "b"]) == [None, 2]
    now[0] = 111.0  # b expired (stored at 100), d and e not
    assert cache.get_many(["b", "d", "e"]) == [None, 4, 5] and len(cache) == 2
    assert LruTtlCache(0, 10.0, lambda: 0.0).get_many(["a"]) == [None]


def test_opening_keeps_a_key_from_its_second_use_and_it_then_seals_like_bound():
    dek = bytes(range(32))
    kid = "K" * 22
    c = TokenCipher(max_keys=4)
    h1, ctx1 = c.opening(kid, dek, GCM, "pii", "ab" * 16)
    assert ctx1 == key_context(GCM, kid, "pii", "ab" * 16) and not c._bound
    h2, ctx2 = c.opening(kid, dek, GCM, "pii", "ab" * 16)
    assert ctx2 == ctx1 and len(c._bound) == 1
    h3, ctx3 = c.bound(kid, dek, GCM, "pii", "ab" * 16)  # an encrypt after it gets the kept handle
    assert h3 is h2 and ctx3 == ctx1 and h3.context(GCM, "pii", "ab" * 16) == ctx1
    token = h3.seal("v", ctx1 + b"tail", b"\x00" * 12)
    assert token.startswith(f"ew1.g.{kid}.") and h1.open_token(token, len(f"ew1.g.{kid}."), GCM, ctx1 + b"tail") == "v"
    assert c.opening(kid, dek, SIV, "pii", None)[1] == key_context(SIV, kid, "pii", None)
    for i in range(10):  # bounded: the memory of keys met once is emptied when full
        c.opening(f"k{i}" + "x" * 20, dek, GCM, "pii", None)
        assert len(c._once) <= 4 and len(c._bound) <= 4


def test_key_store_outage_in_the_batch_query_stops_the_consumer_before_the_event(tmp_path, monkeypatch):
    """The batch's one query fails (store unreachable): the consumer stops at the first event
    whose key it has not got, commits nothing, and resumes there once the store is back."""
    from eventward._internal import demo
    from eventward._internal.deployment import Deployment
    from eventward._internal.home import Home
    from eventward.errors import KeyStoreUnavailable

    d = Deployment.init(Home(tmp_path / "home"), admin=demo.ADMIN)
    try:
        result = demo.DemoResult()
        demo.setup(d, lambda *_: None)
        demo.schemas(d, result, lambda *_: None)
        orders = []
        for i in range(6):
            data = demo.order(i)
            data["customer"] = {**data["customer"], "id": f"cust-{3000 + i}"}
            orders.append(data)
        with d.producer(demo.PRODUCER, demo.TOPIC) as p:
            p.send_many(demo.EVENT_TYPE, orders, source="/shop")
        d.keys._drop_caches()

        def outage(*a: object, **kw: object) -> object:
            raise KeyStoreUnavailable("key store unreachable (test outage)")

        consumer = d.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True)
        seen: list = []
        try:
            monkeypatch.setattr(d.keys.store, "wrapped_deks", outage)
            monkeypatch.setattr(d.keys.store, "get_dek", outage)
            with pytest.raises(KeyStoreUnavailable):
                consumer.run(seen.append, idle_timeout=0.2)
            assert seen == [] and d.transport.committed("g", demo.TOPIC) is None
            monkeypatch.undo()
            stats = consumer.run(seen.append, idle_timeout=0.2)
        finally:
            consumer.close()
        assert stats.delivered == 6 and [e.offset for e in seen] == list(range(6))
        assert [e.data["customer"]["name"] for e in seen] == [o["customer"]["name"] for o in orders]
    finally:
        d.close()
