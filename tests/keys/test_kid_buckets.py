"""Kids are bucketed: those created together share a random 4-byte prefix (B-tree-local in the
key store's kid index), a bucket lasts at most 1 s and 4,096 kids, a forked child starts its own,
and every kid keeps the old form (22 base64url characters of 16 bytes), so old and new kids are
read alike and a lookup stays exact."""

from __future__ import annotations

import base64
import os
import secrets
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.crypto.tokens import GCM, SIV, encode_token, parse
from eventward._internal.keys import dek
from eventward._internal.keys.dek import KID_BUCKET_SIZE, KID_LEN, KidSource, all_kids, is_kid, new_kid
from eventward.errors import KeyNotFound

from .conftest import SENTINEL


class Clock:
    """A clock the test moves by hand (no sleeping)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw(kid: str) -> bytes:
    return base64.urlsafe_b64decode(kid + "==")


def prefix(kid: str) -> bytes:
    return raw(kid)[: dek.KID_BUCKET_BYTES]


@pytest.fixture
def frozen(monkeypatch) -> KidSource:
    """new_kid from a source whose clock stands still: a burst is one bucket however slow the host."""
    source = KidSource(clock=Clock())
    monkeypatch.setattr(dek, "_KIDS", source)
    return source


def test_kids_of_one_burst_share_the_prefix_and_differ_in_the_tail():
    source = KidSource(clock=Clock())
    kids = [source() for _ in range(1000)]
    assert len({prefix(k) for k in kids}) == 1
    assert len(set(kids)) == 1000
    assert len({raw(k)[4:] for k in kids}) == 1000


def test_a_bucket_older_than_a_second_is_replaced():
    clock = Clock()
    source = KidSource(clock=clock)
    first = source()
    clock.now += 0.999
    assert prefix(source()) == prefix(first)
    clock.now += 0.002  # 1.001 s after the bucket began
    second = source()
    assert prefix(second) != prefix(first)
    clock.now += 0.5  # the new bucket is timed from its own start
    assert prefix(source()) == prefix(second)


def test_a_clock_going_back_starts_a_new_bucket():
    clock = Clock()
    source = KidSource(clock=clock)
    first = source()
    clock.now -= 5.0
    assert prefix(source()) != prefix(first)


def test_a_bucket_holds_at_most_4096_kids():
    source = KidSource(clock=Clock())
    kids = [source() for _ in range(3 * KID_BUCKET_SIZE + 1)]
    buckets = [prefix(k) for k in kids]
    assert KID_BUCKET_SIZE == 4096
    for b in range(3):
        assert len(set(buckets[b * KID_BUCKET_SIZE : (b + 1) * KID_BUCKET_SIZE])) == 1
    assert len(set(buckets)) == 4  # each bucket's prefix differs from the others'
    assert buckets[-1] != buckets[-2]


def test_prefixes_of_different_buckets_differ():
    source = KidSource(clock=Clock(), size=1)
    prefixes = [prefix(source()) for _ in range(2000)]
    assert len(set(prefixes)) == 2000  # random 32-bit prefixes: a repeat among 2,000 is ~2^-11 likely


def test_threads_share_buckets_without_duplicates():
    source = KidSource(clock=Clock())
    out: list[list[str]] = [[] for _ in range(4)]

    def make(i: int) -> None:
        out[i].extend(source() for _ in range(2000))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kids = [k for part in out for k in part]
    assert len(set(kids)) == 8000
    assert len({prefix(k) for k in kids}) == 2  # 8,000 kids: two full buckets, no more


def test_a_forked_child_starts_its_own_bucket(monkeypatch):
    source = KidSource(clock=Clock())  # frozen: only the fork can end the parent's bucket
    monkeypatch.setattr(dek, "_KIDS", source)
    parent = new_kid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next kid and leave at once
        try:
            os.close(r)
            os.write(w, new_kid().encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        child = os.read(r, 64).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert is_kid(child)
    assert prefix(child) != prefix(parent)
    assert prefix(new_kid()) == prefix(parent)  # the parent keeps its own


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.floats(-2.0, 3.0, allow_nan=False), max_size=20), size=st.integers(1, 5))
def test_every_kid_is_22_base64url_chars_of_16_bytes(steps, size):
    clock = Clock()
    source = KidSource(clock=clock, size=size)
    kids = [new_kid()]
    for step in steps:
        clock.now += step
        kids.append(source())
    for kid in kids:
        assert len(kid) == KID_LEN and is_kid(kid)
        b = raw(kid)
        assert len(b) == 16
        assert base64.urlsafe_b64encode(b).rstrip(b"=").decode() == kid  # canonical: one spelling
    assert all_kids(kids)
    assert len(set(kids)) == len(kids)


def test_new_and_old_kids_pass_every_kid_check_and_token_parsing():
    old = secrets.token_urlsafe(16)  # how kids were made before buckets
    for kid in (new_kid(), old):
        assert is_kid(kid) and all_kids([kid])
        for alg in (GCM, SIV):
            token = encode_token(alg, kid, b"\x00" * 40)
            assert parse(token).kid == kid


def test_keys_made_in_one_burst_share_a_bucket(svc, frozen):
    """Both creation paths of KeyService (one key, a batch) take their kids from new_kid."""
    one = [svc.encryption_key(f"{SENTINEL}-{i}", "pii", principal="writer")[0] for i in range(5)]
    many = [k for k, _, _ in svc.encryption_keys([(f"s{i}", "payment", 1) for i in range(50)], principal="writer")]
    assert len({prefix(k) for k in one + many}) == 1
    assert all(svc.store.get_dek(k) is not None for k in one + many)


def test_old_random_kids_still_resolve_from_the_store(svc):
    """A key stored under a kid made before buckets (fully random) is current for its subject and
    decrypts, one key and per read batch, beside a bucketed one."""
    h = svc.subject_hash(SENTINEL)
    old_kid, old_dek = secrets.token_urlsafe(16), os.urandom(dek.DEK_BYTES)
    assert svc.store.insert_dek(svc.wrap_record(old_kid, h, "pii", 1, old_dek, 1.0))
    assert svc.encryption_key(SENTINEL, "pii", principal="writer") == (old_kid, old_dek)
    new_kid_, new_dek = svc.encryption_key("another subject", "pii", principal="writer")
    svc._drop_caches()
    assert svc.decryption_key(old_kid, "pii", principal="admin") == old_dek
    svc._drop_caches()
    got = svc.decryption_keys([(old_kid, "pii", h), (new_kid_, "pii", None)], principal="admin")
    assert got == {(old_kid, "pii"): old_dek, (new_kid_, "pii"): new_dek}


def _other_tail(kid: str) -> str:
    b = raw(kid)
    return base64.urlsafe_b64encode(b[:4] + secrets.token_bytes(12)).rstrip(b"=").decode()


def test_attack_a_kid_sharing_a_prefix_does_not_resolve_another_subjects_key(svc, frozen):
    """Kids of one bucket share their first 4 bytes, so a reader of the log sees them; guessing
    the rest (96 random bits) is still needed: the store's lookup is exact, never by prefix."""
    victim, victim_dek = svc.encryption_key(SENTINEL, "pii", principal="writer")
    mine, _ = svc.encryption_key("attacker", "pii", principal="writer")
    assert prefix(mine) == prefix(victim)
    forged = [_other_tail(victim), _other_tail(mine), victim[:-1] + ("A" if victim[-1] != "A" else "B"),
              victim[:5] + mine[5:], mine[:5] + "_" * 17]
    forged = [k for k in forged if k not in (victim, mine)]
    assert all(is_kid(k) for k in forged)
    svc._drop_caches()
    assert svc.store.wrapped_deks(forged) == {}
    assert all(svc.store.get_dek(k) is None for k in forged)
    for k in forged:
        with pytest.raises(KeyNotFound):
            svc.decryption_key(k, "pii", principal="admin")
    got = svc.decryption_keys([(k, "pii", None) for k in forged], principal="admin")
    assert all(isinstance(v, KeyNotFound) for v in got.values()) and len(got) == len(forged)
    assert victim_dek not in got.values()
    svc._drop_caches()
    assert svc.decryption_key(victim, "pii", principal="admin") == victim_dek  # the exact kid still does



def test_attack_kid_with_a_trailing_newline_is_not_a_kid() -> None:
    """``$`` would match before a final newline: is_kid and all_kids must agree that it is no kid."""
    from eventward._internal.keys.dek import all_kids, is_kid

    kid = new_kid()
    assert is_kid(kid) and all_kids([kid])
    for bad in (kid + "\n", kid + "\r\n", "\n" + kid):
        assert not is_kid(bad) and not all_kids([bad])
