"""FieldEncryptor.decrypt_many (a consumer's read batch) against a loop of decrypt in the same
reading_batch: the same clear data and reports, and for a bad event the same first error (type,
message, details), on valid tokens and on tokens tampered, truncated, extended, moved or
re-labelled. It answers from the read batch's memo only (never the key source), leaves undecided
(None) what needs the key source, and its outcomes stop being current as soon as a forget, a
clear_cache or the memo's TTL would change what decrypt gives."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.crypto import fields
from eventward._internal.crypto.fields import ERASED, REDACTED, FieldEncryptor
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT, AllowList
from eventward.errors import EventwardError, InputError, TokenError

from .conftest import SPEC, CountingKeys, order

# Where SPEC puts tokens in ``order()`` data (items[1].note is null, items[2] has none).
PATHS = ("customer.name", "customer.email", "customer.phone", "customer.email_lookup", "payment.card",
         "payment.holder", "items[0].note")


def _steps(path: str) -> list[Any]:
    out: list[Any] = []
    for part in path.split("."):
        if part.endswith("]"):
            name, idx = part[:-1].split("[")
            out += [name, int(idx)]
        else:
            out.append(part)
    return out


def get(data: Any, path: str) -> Any:
    for step in _steps(path):
        data = data[step]
    return data


def put(data: Any, path: str, value: Any) -> None:
    *head, last = _steps(path)
    for step in head:
        data = data[step]
    data[last] = value


PLAIN = FieldSpec.from_dict({
    "subject": "customer.id",
    "fields": {"customer.name": "pii", "customer.email": "pii", "customer.phone": "pii", "payment.card": "payment",
               "customer.email_lookup": {"class": "pii", "deterministic": True}},
})
# The benchmark's shape: one parent object, one class (decrypt_many's inlined _locate case).
ONE_GROUP = FieldSpec.from_dict({
    "subject": "customer.id", "fields": {"customer.name": "pii", "customer.email": "pii", "customer.phone": "pii"},
})
SPEC_PATHS = {id(SPEC): PATHS, id(PLAIN): PATHS[:5], id(ONE_GROUP): PATHS[:3]}


def _other(c: str) -> str:
    return "B" if c == "A" else "A"


def _at(t: str, k: int, text: str, width: int = 1) -> str:
    """``t`` with ``width`` characters of its payload, from payload offset ``k``, replaced by ``text``."""
    p = t.index(".", 6) + 1 + k
    return t[:p] + text + t[p + width :]


# Token mutations: each gives a string (or value) decrypt must refuse.
MUTATIONS: dict[str, Callable[[str], Any]] = {
    "flip_payload": lambda t: _at(t, 8, _other(_at(t, 8, "", 0)[t.index(".", 6) + 9])),
    "flip_last": lambda t: t[:-1] + _other(t[-1]),  # may be only the unused low bits: non-canonical
    "truncate_1": lambda t: t[:-1],
    "truncate_2": lambda t: t[:-2],
    "truncate_3": lambda t: t[:-3],
    "truncate_to_short": lambda t: t[: t.index(".", 6) + 9],
    "empty_payload": lambda t: t[: t.index(".", 6) + 1],
    "extend_A": lambda t: t + "A",
    "extend_AA": lambda t: t + "AA",
    "extend_AAAA": lambda t: t + "AAAA",
    "plus": lambda t: _at(t, 5, "+"),
    "slash": lambda t: _at(t, 5, "/"),
    "pad": lambda t: t + "=",
    "pad_mid": lambda t: _at(t, 8, "==", 2),
    "space": lambda t: _at(t, 5, " "),
    "non_ascii": lambda t: _at(t, 5, "é"),
    "dot": lambda t: _at(t, 5, "."),
    "alg_relabel": lambda t: t[:4] + ("s" if t[4] == "g" else "g") + t[5:],
    "kid_forged": lambda t: t[:6] + "forged" + t[t.index(".", 6) :],
    "plaintext": lambda t: "alice@example.com",
    "not_a_string": lambda t: 42,
    "null": lambda t: None,
}


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except EventwardError as e:
        return (type(e), e.message, e.details)


def _norm(outcome: Any) -> Any:
    return (type(outcome), outcome.message, outcome.details) if isinstance(outcome, EventwardError) else outcome


def _compare(enc: FieldEncryptor, items: list[tuple[str, Any, Any]], principal: str = "reader",
             uncleared: str = "redact", spec: FieldSpec = SPEC) -> tuple[list[Any], list[Any]]:
    """(loop outcomes, decrypt_many outcomes) in one reading_batch: the loop first (it fills the
    memo, as resolve_wanted does for a consumer), then decrypt_many from that memo."""
    with enc.reading_batch():
        loop = [_outcome(lambda e=e, d=d, s=s: enc.decrypt(e, d, spec, s, principal=principal,
                                                              uncleared=uncleared))
                for e, d, s in items]
        many, stamp = enc.decrypt_many(items, spec, principal=principal, uncleared=uncleared)
        assert enc.batch_current(stamp) or (stamp is None and many == [None] * len(items))  # an empty memo
    assert not enc.batch_current(stamp)  # the memo is gone with its reading_batch
    return loop, [_norm(o) for o in many]


def _sealed(enc: FieldEncryptor, n: int, customers: int = 3, spec: FieldSpec = SPEC) -> list[tuple[str, Any, Any]]:
    items = []
    for i in range(n):
        data = order(f"cust-{i % customers}")
        if i % 4 == 3:
            del data["customer"]["phone"]  # an optional leaf absent
        out, shash = enc.encrypt(f"evt-{i}", data, spec, principal="p")
        items.append((f"evt-{i}", out, shash))
    return items


@pytest.fixture
def keys() -> MemoryKeys:
    a = AllowList()
    for cls in ("pii", "payment"):
        a.grant("reader", DECRYPT, ("Class", cls))
    a.grant("support", DECRYPT, ("Class", "pii"))
    return MemoryKeys(a)


def test_decrypt_many_equals_a_loop_of_decrypt_on_valid_tokens(keys: MemoryKeys) -> None:
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 12)
    before = copy.deepcopy(items)
    for principal in ("reader", "support", "stranger"):
        for uncleared in ("redact", "token"):
            loop, many = _compare(enc, items, principal, uncleared)
            assert many == loop  # every event decided: all its keys were in the memo
    assert items == before  # inputs untouched
    loop, many = _compare(enc, items)
    assert many[0][0] == order("cust-0") and many[0][1].decrypted == 8


def test_decrypt_many_outside_a_reading_batch_decides_nothing(keys: MemoryKeys) -> None:
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 3)
    many, stamp = enc.decrypt_many(items, SPEC, principal="reader")
    assert many == [None, None, None] and stamp is None and not enc.batch_current(stamp)


def test_decrypt_many_never_asks_the_key_source() -> None:
    counting = CountingKeys(MemoryKeys())
    enc = FieldEncryptor(counting)
    items = _sealed(enc, 6)
    with enc.reading_batch():
        many, _ = enc.decrypt_many(items, SPEC, principal="p")  # nothing in the memo yet
        assert many == [None] * 6 and counting.dec_calls == []
        enc.decrypt(*items[0][:2], SPEC, items[0][2], principal="p")  # cust-0's keys now in the memo
        calls = len(counting.dec_calls)
        many, _ = enc.decrypt_many(items, SPEC, principal="p")
        assert len(counting.dec_calls) == calls
    assert [m is not None for m in many] == [True, False, False, True, False, False]
    want = order("cust-0")
    del want["customer"]["phone"]  # evt-3 has none
    assert many[3][0] == want and many[0][0] == order("cust-0")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decrypt_many_equals_a_loop_of_decrypt_on_mutated_batches(data: st.DataObject) -> None:
    """Random batches with random tokens tampered, truncated, extended, relabelled, moved between
    fields and events: every outcome decrypt_many decides is exactly the loop's, valid events
    are always decided, and a bad token never changes another event's outcome."""
    keys = MemoryKeys()
    enc = FieldEncryptor(keys)
    spec = data.draw(st.sampled_from([SPEC, PLAIN, ONE_GROUP]), label="spec")
    paths = SPEC_PATHS[id(spec)]
    items = _sealed(enc, data.draw(st.integers(1, 7), label="events"), customers=2, spec=spec)
    n_mut = data.draw(st.integers(0, 4), label="mutations")
    for _ in range(n_mut):
        i = data.draw(st.integers(0, len(items) - 1))
        path = data.draw(st.sampled_from(paths))
        d = items[i][1]
        try:
            token = get(d, path)
        except (KeyError, IndexError, TypeError):
            continue
        kind = data.draw(st.sampled_from([*MUTATIONS, "move_field", "move_event", "drop", "parent"]))
        d = copy.deepcopy(d)
        if kind == "drop":  # an optional leaf absent
            del get(d, path.rpartition(".")[0])[path.rpartition(".")[2]]
        elif kind == "parent":  # the parent object null, or not an object at all
            put(d, path.split(".")[0], data.draw(st.sampled_from([None, [1], "x", 7, {}])))
        elif kind in ("move_field", "move_event"):
            if kind == "move_field":
                src, src_path = d, data.draw(st.sampled_from([p for p in paths if p != path]))
            else:
                src, src_path = items[data.draw(st.integers(0, len(items) - 1))][1], path
            try:
                put(d, path, get(src, src_path))
            except (KeyError, IndexError, TypeError):  # no token there (absent, or its parent is not an object)
                continue
        elif isinstance(token, str):
            try:
                put(d, path, MUTATIONS[kind](token))
            except (ValueError, IndexError):  # a token mutated before: no header or payload left to cut
                continue
        items[i] = (items[i][0], d, items[i][2])
    loop, many = _compare(enc, items, spec=spec)
    undecided = all(m is None for m in many)  # an empty memo (no key read by the loop): nothing decided
    for want, got in zip(loop, many, strict=True):
        if got is None:  # only errors are left undecided, unless nothing is
            assert undecided or (isinstance(want, tuple) and isinstance(want[0], type))
        else:
            assert got == want


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@pytest.mark.parametrize("path", ["customer.email", "customer.email_lookup", "items[0].note"])
def test_attack_each_token_mutation_in_a_batch_fails_as_decrypt_fails_it_alone(keys, kind, path) -> None:
    """One event's token broken in one way, amid valid events: that event fails with decrypt's
    first error (or is left to decrypt), and the batch's other events decrypt unchanged."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 5)
    bad = copy.deepcopy(items[2][1])
    put(bad, path, MUTATIONS[kind](get(bad, path)))
    items[2] = (items[2][0], bad, items[2][2])
    loop, many = _compare(enc, items)
    assert isinstance(loop[2], tuple) and loop[2][0] is TokenError  # decrypt refuses it ...
    assert many[2] is None or many[2] == loop[2]  # ... and so does decrypt_many, or leaves it to decrypt
    if kind != "kid_forged":  # a forged key id needs the key source: undecided here
        assert many[2] == loop[2] and loop[2][2]["path"] == path
    assert many[:2] + many[3:] == loop[:2] + loop[3:] and all(type(m) is tuple and len(m) == 2 for m in many[3:])


def test_attack_tampered_ciphertext_is_refused_and_names_the_field_only(keys) -> None:
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 3)
    for path in PATHS:
        bad = copy.deepcopy(items[1][1])
        t = get(bad, path)
        put(bad, path, t[:-12] + _other(t[-12]) + t[-11:])  # a ciphertext/tag byte, canonical
        loop, many = _compare(enc, [items[0], (items[1][0], bad, items[1][2]), items[2]])
        assert many == loop and many[1][0] is TokenError and "does not verify" in many[1][1]
        assert many[1][2] == {"path": path} and t not in many[1][1]


def test_attack_tokens_swapped_between_fields_events_and_subjects_fail_their_binding(keys) -> None:
    """The associated data binds event id, field path and subject: a token moved anywhere else
    does not verify, also in a batch where the moved token's key is in the memo."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 4, customers=2)  # evt-0 and evt-2: cust-0; evt-1 and evt-3: cust-1
    swaps = [
        (0, "customer.name", 0, "customer.email"),  # another field, same event
        (0, "items[0].note", 0, "customer.phone"),
        (2, "customer.email", 0, "customer.email"),  # same field, another event of the subject
        (2, "payment.card", 0, "payment.card"),
        (1, "customer.email", 0, "customer.email"),  # another subject's token
    ]
    for dst_i, dst_path, src_i, src_path in swaps:
        moved = copy.deepcopy(items[dst_i][1])
        put(moved, dst_path, get(items[src_i][1], src_path))
        batch = list(items)
        batch[dst_i] = (items[dst_i][0], moved, items[dst_i][2])
        loop, many = _compare(enc, batch)
        assert loop[dst_i][0] is TokenError and loop[dst_i][2]["path"] == dst_path
        assert many[dst_i] == loop[dst_i] or (many[dst_i] is None and dst_i == 1)  # cust-0's key: not cust-1's
        assert [m for j, m in enumerate(many) if j != dst_i] == [m for j, m in enumerate(loop) if j != dst_i]


def test_attack_wrong_key_version_relabelled_on_a_token_does_not_verify(keys) -> None:
    """Two key versions of one subject in the memo: a token relabelled with the other version's
    key id (both in the memo, so decrypt_many decides) fails as decrypt fails it."""
    enc = FieldEncryptor(keys)
    old, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    keys.rotate("alice", "pii")
    new, _ = enc.encrypt("evt-2", order(), SPEC, principal="p")
    old_kid = get(old, "customer.email").split(".")[2]
    new_kid = get(new, "customer.email").split(".")[2]
    assert old_kid != new_kid
    relabelled = copy.deepcopy(new)
    put(relabelled, "customer.email", get(new, "customer.email").replace(new_kid, old_kid, 1))
    loop, many = _compare(enc, [("evt-1", old, shash), ("evt-2", relabelled, shash)])
    assert many == loop and many[1][0] is TokenError and many[1][2] == {"path": "customer.email"}
    assert many[0][0] == order()


def test_attack_non_canonical_last_character_is_refused_in_a_batch(keys) -> None:
    """Changing only the unused low bits of the last character changes the text, not the bytes:
    decrypt_many checks each token's last character, as decrypt does."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 2)
    for path in PATHS:
        t = get(items[0][1], path)
        rem = (len(t) - t.index(".", 6) - 1) % 4
        if rem == 0:
            continue
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        twin = alphabet[alphabet.index(t[-1]) + 1]  # same high bits, a low bit set
        bad = copy.deepcopy(items[0][1])
        put(bad, path, t[:-1] + twin)
        loop, many = _compare(enc, [(items[0][0], bad, items[0][2]), items[1]])
        assert many == loop and "canonical" in many[0][1] and many[1] == loop[1]


def test_forgotten_subject_and_uncleared_classes_read_as_decrypt_reads_them(keys) -> None:
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 4, customers=2)
    keys.forget("cust-1")
    loop, many = _compare(enc, items)
    assert many == loop and many[1][0]["customer"]["name"] == ERASED and many[1][1].erased == 8
    loop, many = _compare(enc, items, principal="support")
    assert many == loop and many[0][0]["payment"]["card"] == REDACTED


def test_invalid_arguments_are_refused_per_event_as_decrypt_refuses_them(keys) -> None:
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 2)
    batch = [("", items[0][1], items[0][2]), (items[1][0], items[1][1], None), (items[0][0], [1], items[0][2]),
             items[1]]
    loop, many = _compare(enc, batch)
    assert many == loop and all(issubclass(m[0], InputError) for m in many[:3])
    with pytest.raises(InputError):
        enc.decrypt_many(items, SPEC, principal="reader", uncleared="clear")  # type: ignore[arg-type]


class RevokingKeys(MemoryKeys):
    """MemoryKeys counting its forgets, as the key service counts revocations."""

    revocations = 0

    def forget(self, subject: str) -> int:
        self.revocations += 1
        return super().forget(subject)


def test_outcomes_stop_being_current_on_forget_clear_cache_and_ttl(monkeypatch) -> None:
    """What the consumer relies on to never deliver an outcome decrypt would no longer give."""
    keys = RevokingKeys()
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 2)

    def ahead() -> Any:
        for e, d, s in items:
            enc.decrypt(e, d, SPEC, s, principal="p")
        many, stamp = enc.decrypt_many(items, SPEC, principal="p")
        assert all(type(m) is tuple for m in many) and enc.batch_current(stamp)
        return stamp

    with enc.reading_batch():
        stamp = ahead()
        keys.forget("cust-0")
        assert not enc.batch_current(stamp)
        clear, report = enc.decrypt(*items[0][:2], SPEC, items[0][2], principal="p")
        assert clear["customer"]["name"] == ERASED and report.erased
    with enc.reading_batch():
        stamp = ahead()
        enc.clear_cache()
        assert not enc.batch_current(stamp)
    with enc.reading_batch():
        stamp = ahead()
        now = fields.time.monotonic()
        monkeypatch.setattr(fields.time, "monotonic", lambda: now + fields._BATCH_KEYS_TTL + 1)
        assert not enc.batch_current(stamp)
        many, stale = enc.decrypt_many(items, SPEC, principal="p")  # past the TTL: decides nothing
        assert many == [None, None] and stale is None



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_want_keys_collects_exactly_what_key_ids_finds(data: st.DataObject) -> None:
    """want_keys reads a plain plan's key ids in place (its hot path), one token per slot; key_ids
    is the reference: every pair it finds in an event as encrypt made it, and never a pair key_ids
    does not find, for valid, mutated, missing and mistyped values."""
    enc = FieldEncryptor(MemoryKeys())
    items = []
    whole = set()  # (key id, class, subject hash) of the events left as encrypt made them
    for i in range(data.draw(st.integers(1, 4), label="events")):
        out, shash = enc.encrypt(f"evt-{i}", order(f"cust-{i % 2}"), PLAIN, principal="p")
        mutations = data.draw(st.integers(0, 3), label="mutations")
        if not mutations:
            whole |= {(kid, cls, shash) for kid, cls in enc.key_ids(PLAIN, out)}
        for _ in range(mutations):
            path = data.draw(st.sampled_from(["customer.name", "customer.email", "payment.card", "customer"]))
            kind = data.draw(st.sampled_from([*MUTATIONS, "delete"]))
            parent, _, leaf = path.rpartition(".")
            holder = out.get(parent) if parent else out
            if type(holder) is not dict or leaf not in holder:
                continue
            if kind == "delete":
                del holder[leaf]
                continue
            try:  # a token mutated, or a container replaced by what a mutation makes of a token
                holder[leaf] = MUTATIONS[kind](holder[leaf] if type(holder[leaf]) is str else "ew1.g.k.AAAA")
            except (ValueError, IndexError):
                continue
        items.append((out, shash))
    enc._plan(PLAIN)  # prepared, as a consumer's spec is: want_keys takes its in-place path
    wanted: dict = {}
    for out, shash in items:
        enc.want_keys(wanted, "T", PLAIN, shash, out)
    expected = {(kid, cls, shash) for out, shash in items for kid, cls in enc.key_ids(PLAIN, out)}
    got = set(wanted.get("T", {}))
    assert whole <= got <= expected and ("T" in wanted) == bool(got)


def test_a_slot_token_under_a_key_id_not_prefetched_is_left_to_decrypt(keys: MemoryKeys) -> None:
    """want_keys takes one token per slot; an event whose other token of that slot carries another
    key id (moved from another subject's event) is not decided from the memo: decrypt_many leaves
    it to decrypt, which refuses it naming the field only."""
    enc = FieldEncryptor(keys)
    (a_id, a, a_hash), (_, b, _), _ = _sealed(enc, 3, customers=2, spec=ONE_GROUP)
    moved = copy.deepcopy(a)
    moved["customer"]["email"] = b["customer"]["email"]
    wanted: dict[Any, Any] = {}
    enc._plan(ONE_GROUP)
    enc.want_keys(wanted, "T", ONE_GROUP, a_hash, moved)
    assert len(wanted["T"]) == 1  # only the first token's key id
    with enc.reading_batch():
        enc.decrypt(a_id, a, ONE_GROUP, a_hash, principal="reader")  # the memo holds a's key only
        many, _ = enc.decrypt_many([(a_id, moved, a_hash)], ONE_GROUP, principal="reader")
        assert many == [None]
        with pytest.raises(TokenError) as e:
            enc.decrypt(a_id, moved, ONE_GROUP, a_hash, principal="reader")
    assert e.value.details["path"] == "customer.email" and b["customer"]["email"] not in e.value.message
