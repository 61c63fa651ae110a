"""FieldEncryptor.encrypt_many (a producer's send_many) against a loop of encrypt: the same
tokens in the same places (opened by decrypt), the same subject hashes, the same key-source
calls, the same first error, inputs untouched, and never a nonce used twice, even when events
carry more sensitive values than the call's nonce blocks were sized for."""

from __future__ import annotations

import base64
import copy
import os

import pytest

from eventward._internal.crypto import fields, tokens
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward.errors import FieldSpecError, InputError

from .conftest import SENTINEL, SPEC, CountingKeys, order


def _events(n: int) -> list[dict]:
    out = []
    for i in range(n):
        e = order(f"cust-{i % 7}")
        if i % 3 == 0:  # optional leaves absent: fewer values than the plan's plain paths
            del e["customer"]["phone"]
        if i % 4 == 1:  # many array values: more than the call's per-event nonce estimate
            e["items"] = [{"sku": f"SKU-{j}", "note": f"note {j}"} for j in range(40)]
        out.append(e)
    return out


def _gcm_nonces(data: object) -> list[bytes]:
    """The 12-byte nonce of every GCM token anywhere in ``data``."""
    found: list[bytes] = []
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and v.startswith("ew1.g."):
            _, _, blob = tokens.split(v)
            found.append(blob[: tokens.NONCE_BYTES])
    return found


def test_encrypt_many_equals_a_loop_of_encrypt_once_decrypted(enc: FieldEncryptor) -> None:
    events = _events(30)
    before = copy.deepcopy(events)
    ids = [f"evt-{i}" for i in range(len(events))]
    many = enc.encrypt_many(ids, events, SPEC, principal="p", topic="orders", event_type="OrderPlaced")
    loop = [
        enc.encrypt(i, e, SPEC, principal="p", topic="orders", event_type="OrderPlaced")
        for i, e in zip(ids, events, strict=True)
    ]
    assert events == before  # inputs untouched
    assert len(many) == len(events)
    for event_id, data, (out, shash), (ref, ref_hash) in zip(ids, events, many, loop, strict=True):
        assert shash == ref_hash is not None
        assert SENTINEL not in repr(out)
        assert out.keys() == ref.keys() and out["customer"].keys() == ref["customer"].keys()
        opened, report = enc.decrypt(event_id, out, SPEC, shash, principal="reader")
        assert opened == data and report.redacted == report.erased == 0
        # the deterministic field is the same token as encrypt's; GCM ones differ only by nonce
        assert out["customer"]["email_lookup"] == ref["customer"]["email_lookup"]
        assert out["customer"]["name"] != ref["customer"]["name"]


def test_encrypt_many_asks_the_key_source_as_encrypt_does() -> None:
    keys_a, keys_b = CountingKeys(MemoryKeys()), CountingKeys(MemoryKeys())
    events, ids = _events(12), [f"e{i}" for i in range(12)]
    FieldEncryptor(keys_a).encrypt_many(ids, events, SPEC, principal="p")
    enc_b = FieldEncryptor(keys_b)
    for i, e in zip(ids, events, strict=True):
        enc_b.encrypt(i, e, SPEC, principal="p")
    assert keys_a.enc_calls == keys_b.enc_calls and len(keys_a.enc_calls) >= 2 * len(events)


def test_attack_encrypt_many_never_reuses_nonce_bytes(monkeypatch: pytest.MonkeyPatch, enc: FieldEncryptor) -> None:
    """urandom is replaced by a counter whose every 12-byte window differs: a nonce cut twice
    from one block, or the same block drawn twice, would show as a duplicate."""
    counter = iter(range(1, 1 << 40))

    def fake_urandom(n: int) -> bytes:
        return b"".join(next(counter).to_bytes(12, "big") for _ in range(-(-n // 12)))[:n]

    monkeypatch.setattr(fields.os, "urandom", fake_urandom)
    events = _events(25)
    out = enc.encrypt_many([f"n{i}" for i in range(25)], events, SPEC, principal="p")
    nonces = [n for data, _ in out for n in _gcm_nonces(data)]
    expected = sum(len(fields._locate(SPEC, enc._plan(SPEC), e)[1]) for e in events)
    assert len(nonces) >= expected - 25  # every GCM value (the SIV field has none)
    assert len(nonces) == len(set(nonces))
    assert all(len(n) == tokens.NONCE_BYTES for n in nonces)


def test_encrypt_many_nonces_are_random_across_calls(enc: FieldEncryptor) -> None:
    events = _events(10)
    a = enc.encrypt_many([f"x{i}" for i in range(10)], events, SPEC, principal="p")
    b = enc.encrypt_many([f"x{i}" for i in range(10)], events, SPEC, principal="p")
    na = [n for d, _ in a for n in _gcm_nonces(d)]
    nb = [n for d, _ in b for n in _gcm_nonces(d)]
    assert len(set(na) | set(nb)) == len(na) + len(nb)
    assert os.urandom is fields.os.urandom


def test_the_first_bad_event_raises_encrypts_error(enc: FieldEncryptor) -> None:
    events = _events(6)
    events[2]["customer"]["name"] = {1, 2}  # not JSON: refused at its path, type only
    events[4]["customer"] = "not an object"  # later: never reached
    ids = [f"b{i}" for i in range(6)]
    with pytest.raises(InputError) as many:
        enc.encrypt_many(ids, events, SPEC, principal="p")
    with pytest.raises(InputError) as one:
        enc.encrypt(ids[2], events[2], SPEC, principal="p")
    assert type(many.value) is type(one.value)
    assert many.value.message == one.value.message and many.value.details == one.value.details
    assert "customer.name" in many.value.message and "set" in many.value.message
    with pytest.raises(FieldSpecError):
        enc.encrypt_many(ids[3:], events[3:], SPEC, principal="p")
    # a deterministic (SIV) value that is not JSON: the same wording through KeyHandle.seal
    events = _events(2)
    events[1]["customer"]["email_lookup"] = object()
    with pytest.raises(InputError) as siv:
        enc.encrypt_many(["s0", "s1"], events, SPEC, principal="p")
    assert siv.value.details == {"path": "customer.email_lookup"} and "object" in siv.value.message


@pytest.mark.parametrize("bad", ["", None, 7])
def test_bad_event_ids_and_counts_are_refused(enc: FieldEncryptor, bad: object) -> None:
    with pytest.raises(InputError):
        enc.encrypt_many(["ok", bad], [order(), order()], SPEC, principal="p")  # type: ignore[list-item]
    with pytest.raises(InputError):
        enc.encrypt_many(["only-one"], [order(), order()], SPEC, principal="p")
    assert enc.encrypt_many([], [], SPEC, principal="p") == []


def test_tokens_use_the_canonical_encoding(enc: FieldEncryptor) -> None:
    (out, _), = enc.encrypt_many(["c1"], [order()], SPEC, principal="p")
    token = out["customer"]["name"]
    payload = token.split(".")[3]
    assert "=" not in payload and "+" not in payload and "/" not in payload
    assert tokens.split(token)[2] == base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


class _ContextKeys:
    """A key source that is told topic, type and nonce count (as KeyService is), recording them."""

    takes_context = True

    def __init__(self) -> None:
        self.inner = MemoryKeys()
        self.calls: list[tuple[object, ...]] = []

    def subject_hash(self, subject: str) -> str:
        return self.inner.subject_hash(subject)

    def encryption_key(self, subject, cls, *, principal, topic=None, event_type=None, nonces=1):
        self.calls.append((subject, cls, principal, topic, event_type, nonces))
        return self.inner.encryption_key(subject, cls, principal=principal)

    def decryption_key(self, kid, cls, *, principal, topic=None, event_type=None, subject_hash=None):
        return self.inner.decryption_key(kid, cls, principal=principal)


def test_a_contextual_key_source_is_told_what_encrypt_tells_it() -> None:
    """The inlined key lookup (GCM slots without a deterministic twin) passes topic, type and the
    event's value count exactly as _encryption_head does; the twin slots still share one call."""
    a, b = _ContextKeys(), _ContextKeys()
    events, ids = _events(9), [f"k{i}" for i in range(9)]
    many = FieldEncryptor(a).encrypt_many(ids, events, SPEC, principal="p", topic="t", event_type="T")
    enc_b = FieldEncryptor(b)
    for i, e in zip(ids, events, strict=True):
        enc_b.encrypt(i, e, SPEC, principal="p", topic="t", event_type="T")
    assert a.calls == b.calls and {c[3:5] for c in a.calls} == {("t", "T")}
    assert [h for _, h in many] == [a.subject_hash(e["customer"]["id"]) for e in events]
    simple = FieldEncryptor(a)  # a spec with one GCM class and no twin: the inlined branch alone
    spec = FieldSpec.from_dict({"subject": "customer.id", "fields": {"customer.name": "pii", "customer.phone": "pii"}})
    a.calls.clear()
    out = simple.encrypt_many(ids, events, spec, principal="p", topic="t", event_type="T")
    assert [c[0] for c in a.calls] == [e["customer"]["id"] for e in events]
    assert [c[5] for c in a.calls] == [1 if "phone" not in e["customer"] else 2 for e in events]
    for i, (data, shash) in zip(ids, out, strict=True):
        opened, _ = simple.decrypt(i, data, spec, shash, principal="p")
        assert opened == events[ids.index(i)]
