"""decrypt_many's inline path (a plan without array paths, dict data): each event's parent object
is located without checking for absent values first (an absent optional value sends the event to
_locate), each slot's header is parsed with the slot's algorithm fixed (a miss goes to
tokens.parse_header), and a slot's later tokens reuse the first one's key when their header is the
same. None of that may let a token through that ``decrypt`` refuses: a token moved to another
field, event or class, a non-canonical tail, a key forgotten since an earlier batch."""

from __future__ import annotations

import copy

import pytest

from eventward._internal.crypto.fields import ERASED, FieldEncryptor
from eventward._internal.crypto.tokens import TAMPERED
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT, AllowList
from eventward.errors import TokenError

from .conftest import order
from .test_fields_decrypt_many import ONE_GROUP, PLAIN, _compare, _sealed, get, put

# Two classes in one parent object: one group, two slots.
TWO_CLASSES = FieldSpec.from_dict({
    "subject": "customer.id",
    "fields": {"customer.name": "pii", "customer.email": "pii", "customer.phone": "contact"},
})
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class RevokingKeys(MemoryKeys):
    """MemoryKeys counting its forgets, as the key service counts revocations."""

    revocations = 0

    def forget(self, subject: str) -> int:
        self.revocations += 1
        return super().forget(subject)


@pytest.fixture
def keys() -> MemoryKeys:
    a = AllowList()
    for cls in ("pii", "payment", "contact"):
        a.grant("reader", DECRYPT, ("Class", cls))
    return MemoryKeys(a)


def _kid(token: str) -> str:
    return token.split(".")[2]


@pytest.mark.parametrize("spec", [ONE_GROUP, PLAIN, TWO_CLASSES], ids=["one_group", "plain", "two_classes"])
@pytest.mark.parametrize("dst_path", ["customer.name", "customer.email", "customer.phone"])
def test_attack_token_moved_to_another_field_of_its_event_is_refused(keys, spec, dst_path) -> None:
    """A slot's later tokens skip the header parse when their header equals the first one's: the
    associated data still binds each to its own path. Every token moved onto every other field of
    the same event (same key) fails as decrypt fails it."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 3, customers=3, spec=spec)
    for src_path in ("customer.name", "customer.email", "customer.phone"):
        if src_path == dst_path or src_path not in get(items[1][1], "customer"):
            continue
        moved = copy.deepcopy(items[1][1])
        put(moved, dst_path, get(items[1][1], src_path))
        batch = [items[0], (items[1][0], moved, items[1][2]), items[2]]
        loop, many = _compare(enc, batch, spec=spec)
        assert loop[1][0] is TokenError and loop[1][2]["path"] == dst_path
        assert many == loop  # refused (not left to decrypt: the key is in the memo), the others decrypted
        assert type(many[0]) is tuple and type(many[2]) is tuple


@pytest.mark.parametrize("path", ["customer.name", "customer.email", "customer.phone"])
def test_attack_token_moved_to_another_event_of_its_subject_is_refused(keys, path) -> None:
    """Same subject, same key, same field, another event: the event id in the associated data
    refuses it, first token of its slot or a later one."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 4, customers=2, spec=ONE_GROUP)  # evt-0 and evt-2: cust-0
    moved = copy.deepcopy(items[2][1])
    put(moved, path, get(items[0][1], path))
    assert _kid(get(moved, path)) == _kid(get(moved, "customer.name"))  # the slot's header is reused
    loop, many = _compare(enc, [items[0], items[1], (items[2][0], moved, items[2][2])], spec=ONE_GROUP)
    assert many == loop and many[2][0] is TokenError and many[2][1].endswith(TAMPERED)
    assert many[2][2] == {"path": path} and type(many[0]) is tuple


def test_attack_token_under_another_class_in_the_memo_does_not_verify(keys) -> None:
    """The class is in the associated data. Even with the memo holding the token's own key id
    and DEK under the other class of the field (so decrypt_many reaches the AEAD), a pii token
    moved onto the ``contact`` field does not verify."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 2, customers=2, spec=TWO_CLASSES)
    eid, data, shash = items[0]
    pii_token = get(data, "customer.name")
    kid = _kid(pii_token)
    moved = copy.deepcopy(data)
    put(moved, "customer.phone", pii_token)
    dek = keys.decryption_key(kid, "pii", principal="reader")
    with enc.reading_batch():
        for e, d, h in items:  # the memo: both events' keys
            enc.decrypt(e, d, TWO_CLASSES, h, principal="reader")
        enc._batch.keys[kid, "contact", "reader", None, None, shash] = dek  # the pii key under "contact"
        many, _ = enc.decrypt_many([(eid, moved, shash), items[1]], TWO_CLASSES, principal="reader")
    assert isinstance(many[0], TokenError) and many[0].message.endswith(TAMPERED)
    assert many[0].details == {"path": "customer.phone"} and pii_token not in many[0].message
    assert type(many[1]) is tuple and many[1][0]["customer"]["id"] == "cust-1"


@pytest.mark.parametrize("path", ["customer.name", "customer.email", "customer.phone"])
def test_attack_non_canonical_tail_is_refused_on_every_token_of_a_slot(keys, path) -> None:
    """The unused low bits of the last character, set: the bytes are the same, the text is not.
    Refused on the slot's first token and on the later ones that reuse its header."""
    enc = FieldEncryptor(keys)
    field = path.split(".")[1]
    for size in range(1, 9):  # a value whose token payload ends in a partial group
        data = order("cust-0")
        data["customer"][field] = "x" * size
        sealed, shash = enc.encrypt("evt-t", data, ONE_GROUP, principal="p")
        t = get(sealed, path)
        if (len(t) - t.index(".", 6) - 1) % 4:
            break
    else:
        raise AssertionError("no token with a partial last group")
    other = _sealed(enc, 1, customers=1, spec=ONE_GROUP)[0]
    bad = copy.deepcopy(sealed)
    put(bad, path, t[:-1] + ALPHABET[ALPHABET.index(t[-1]) + 1])
    loop, many = _compare(enc, [("evt-t", sealed, shash), ("evt-t", bad, shash), other], spec=ONE_GROUP)
    assert many == loop and type(many[0]) is tuple and many[0][0]["customer"][field] == "x" * size
    assert many[1][0] is TokenError and "canonical" in many[1][1] and many[1][2] == {"path": path}
    assert type(many[2]) is tuple


@pytest.mark.parametrize("absent", ["customer.name", "customer.email", "customer.phone"])
@pytest.mark.parametrize("broken", ["customer.name", "customer.email", "customer.phone", None])
def test_attack_absent_value_then_broken_token_fails_as_decrypt_fails_it(keys, absent, broken) -> None:
    """An absent optional value is found while opening the event inline; the event is located
    again by _locate and opened from its first token: the outcome is decrypt's, whether a broken
    token comes before the absent value, after it, or not at all."""
    if absent == broken:
        return
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 3, customers=3, spec=ONE_GROUP)
    data = copy.deepcopy(items[1][1])
    del data["customer"][absent.split(".")[1]]
    if broken is not None:
        t = get(data, broken)
        put(data, broken, t[:-12] + ("A" if t[-12] != "A" else "B") + t[-11:])
    batch = [items[0], (items[1][0], data, items[1][2]), items[2]]
    loop, many = _compare(enc, batch, spec=ONE_GROUP)
    assert many == loop
    if broken is None:
        assert type(many[1]) is tuple and absent.split(".")[1] not in many[1][0]["customer"]
        assert many[1][1].decrypted == 2
    else:
        assert many[1][0] is TokenError and many[1][2] == {"path": broken}


def test_attack_token_of_the_other_algorithm_is_refused_as_decrypt_refuses_it(keys) -> None:
    """The header is matched with the slot's algorithm fixed; a token of the other algorithm
    (relabelled, or a deterministic field's token moved onto a GCM field) gets decrypt's error."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 2, customers=2, spec=PLAIN)
    for dst_path, value in (
        ("customer.name", get(items[0][1], "customer.email_lookup")),  # SIV token, GCM field
        ("customer.email_lookup", get(items[0][1], "customer.name")),  # GCM token, SIV field
        ("customer.email", "ew1.s." + get(items[0][1], "customer.email")[6:]),  # relabelled
    ):
        bad = copy.deepcopy(items[0][1])
        put(bad, dst_path, value)
        loop, many = _compare(enc, [(items[0][0], bad, items[0][2]), items[1]], spec=PLAIN)
        assert many == loop and many[0][0] is TokenError and many[0][2] == {"path": dst_path}
        assert "algorithm does not match" in many[0][1]


@pytest.mark.parametrize("spec", [ONE_GROUP, PLAIN], ids=["one_group", "plain"])
def test_attack_key_cached_in_an_earlier_batch_is_not_used_after_a_forget(spec) -> None:
    """Batch 1 decrypts a subject's events (its key is then in the cipher's cache); the subject is
    forgotten. Batch 2's decrypt_many must not open them from any cache: it leaves them to decrypt
    (which reads them erased) or reads them erased itself, never in clear."""
    keys = RevokingKeys()
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 4, customers=2, spec=spec)  # cust-0: evt-0, evt-2
    for _ in range(2):  # twice: a key's second use is the one the cipher keeps
        loop, many = _compare(enc, items, principal="p", spec=spec)
        assert many == loop and all(type(m) is tuple for m in many)
    keys.forget("cust-0")
    with enc.reading_batch():
        for j in (1, 3):  # cust-1's keys in the new batch's memo: decrypt_many runs
            enc.decrypt(*items[j][:2], spec, items[j][2], principal="p")
        many, stamp = enc.decrypt_many(items, spec, principal="p")
        assert enc.batch_current(stamp)
        for j in (0, 2):
            assert many[j] is None or many[j][0]["customer"]["name"] == ERASED
            clear, report = enc.decrypt(*items[j][:2], spec, items[j][2], principal="p")
            assert clear["customer"]["name"] == ERASED and report.erased
        assert type(many[1]) is tuple and many[1][0]["customer"]["name"] != ERASED
    with enc.reading_batch():  # and in the batch where the forget happens, after the memo was read
        enc.decrypt(*items[1][:2], spec, items[1][2], principal="p")
        many, stamp = enc.decrypt_many(items[1:2], spec, principal="p")
        keys.forget("cust-1")
        assert not enc.batch_current(stamp)
        again, _ = enc.decrypt_many(items, spec, principal="p")
        assert all(m is None for m in again)  # a forget since the memo was filled: nothing decided


def test_inline_path_gives_every_event_of_the_workload_shape_its_clear_data(keys) -> None:
    """The benchmark's shape (one parent, one class, three fields), every event decided from the
    memo, the report shared, the inputs untouched."""
    enc = FieldEncryptor(keys)
    items = _sealed(enc, 20, customers=7, spec=ONE_GROUP)
    before = copy.deepcopy(items)
    loop, many = _compare(enc, items, spec=ONE_GROUP)
    assert many == loop and all(type(m) is tuple for m in many)
    assert items == before
    full = [m[1] for m in many if m[1].decrypted == 3]
    assert full and all(r is full[0] for r in full)  # one immutable report for the common outcome
