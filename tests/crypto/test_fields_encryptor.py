"""FieldEncryptor: round trips, clearance, crypto-shredding, fail-closed key failures, and
tokens moved, forged or replaced by plaintext."""

from __future__ import annotations

import copy

import orjson
import pytest

from eventward._internal.crypto import tokens
from eventward._internal.crypto.fields import ERASED, REDACTED, DecryptReport, FieldEncryptor
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT
from eventward.errors import (
    FieldSpecError,
    InputError,
    KeyServiceError,
    KMSUnavailable,
    TokenError,
)

from .conftest import SENTINEL, SPEC, CountingKeys, FailingKeys, order

SENSITIVE = ("customer.name", "customer.email", "customer.phone", "customer.email_lookup",
             "payment.card", "payment.holder", "items[0].note", "items[1].note")


def get(data: dict, path: str) -> object:
    cur: object = data
    for part in path.replace("[", ".").replace("]", "").split("."):
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]  # type: ignore[index]
    return cur


def put(data: dict, path: str, value: object) -> dict:
    """A deep copy of ``data`` with ``path`` set to ``value``."""
    out = copy.deepcopy(data)
    parts = path.replace("[", ".").replace("]", "").split(".")
    cur: object = out
    for part in parts[:-1]:
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]  # type: ignore[index]
    last = parts[-1]
    cur[int(last) if isinstance(cur, list) else last] = value  # type: ignore[index]
    return out


def test_round_trip_encrypts_every_tagged_value_and_leaves_the_input_alone(enc, keys):
    data = order()
    before = copy.deepcopy(data)
    out, shash = enc.encrypt("evt-1", data, SPEC, principal="producer")
    assert data == before  # input untouched
    assert shash == keys.subject_hash("alice")
    for path in SENSITIVE:
        assert tokens.is_token(get(out, path)), path
        tokens.parse(get(out, path))
    # Non-sensitive values stay clear and routable.
    assert out["order_id"] == "ord-1" and out["customer"]["tier"] == "gold"
    assert out["items"][2] == {"sku": "SKU-3"}
    raw = orjson.dumps(out)
    for secret in (b"alice Liddell", b"alice@example.com", b"4111111111111111", b"+1-555-0100", b"gift wrap"):
        assert secret not in raw
    clear, report = enc.decrypt("evt-1", out, SPEC, shash, principal="reader")
    assert clear == data
    assert report == DecryptReport(decrypted=8, classes=frozenset({"pii", "payment"}))
    assert get(out, "customer.name").startswith("ew1.g.")  # decrypt did not touch its input either


def test_outputs_never_alias_the_containers_they_changed(enc):
    data = order()
    out, _ = enc.encrypt("evt-1", data, SPEC, principal="p")
    assert out is not data and out["customer"] is not data["customer"] and out["items"] is not data["items"]
    out["customer"]["name"] = "changed"
    assert data["customer"]["name"] == "alice Liddell"


def test_null_sensitive_values_are_encrypted_and_come_back_as_null(enc):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    assert tokens.is_token(out["items"][1]["note"])  # null is hidden too (its presence is data)
    clear, _ = enc.decrypt("evt-1", out, SPEC, shash, principal="reader")
    assert clear["items"][1]["note"] is None


def test_missing_optional_fields_are_skipped(enc):
    data = order()
    del data["customer"]["phone"]
    del data["payment"]
    out, shash = enc.encrypt("evt-1", data, SPEC, principal="p")
    assert "phone" not in out["customer"] and "payment" not in out
    clear, report = enc.decrypt("evt-1", out, SPEC, shash, principal="reader")
    assert clear == data and report.classes == frozenset({"pii"})


def test_class_keys_are_used_when_the_spec_names_no_subject():
    counting = CountingKeys(MemoryKeys())
    enc = FieldEncryptor(counting)
    spec = FieldSpec.from_dict({"fields": {"ip": "netid"}})
    out, shash = enc.encrypt("evt-9", {"ip": "10.0.0.1"}, spec, principal="p")
    assert shash is None and counting.enc_calls == [(None, "netid")]
    assert enc.decrypt("evt-9", out, spec, None, principal="ops")[0] == {"ip": "10.0.0.1"}
    with pytest.raises(TokenError):  # another key source never issued that key id
        FieldEncryptor(MemoryKeys()).decrypt("evt-9", out, spec, None, principal="ops")


def test_reader_not_cleared_for_a_class_sees_redacted_while_cleared_classes_decrypt(enc):
    data = order()
    out, shash = enc.encrypt("evt-1", data, SPEC, principal="p")
    clear, report = enc.decrypt("evt-1", out, SPEC, shash, principal="support")  # pii only
    assert clear["payment"]["card"] == REDACTED and clear["payment"]["holder"] == REDACTED
    assert clear["payment"]["amount"] == 1299
    assert clear["customer"]["email"] == "alice@example.com" and clear["items"][0]["note"] == "gift wrap"
    assert (report.decrypted, report.redacted, report.erased) == (6, 2, 0)
    assert report.redacted_classes == frozenset({"payment"})
    assert report.classes == frozenset({"pii", "payment"})
    kept, report = enc.decrypt("evt-1", out, SPEC, shash, principal="support", uncleared="token")
    assert kept["payment"] == out["payment"]  # the tokens, unchanged
    nobody, report = enc.decrypt("evt-1", out, SPEC, shash, principal="stranger")  # deny by default
    assert report.decrypted == 0 and report.redacted == 8
    assert all(get(nobody, p) == REDACTED for p in SENSITIVE)


def test_forgotten_subject_reads_as_erased_while_others_still_decrypt(enc, keys):
    a, ash = enc.encrypt("evt-a", order("alice"), SPEC, principal="p")
    b, bsh = enc.encrypt("evt-b", order("bob"), SPEC, principal="p")
    assert keys.forget("alice") == 2  # one DEK per class: pii and payment
    clear_a, report = enc.decrypt("evt-a", a, SPEC, ash, principal="reader")
    assert all(get(clear_a, p) == ERASED for p in SENSITIVE)
    assert report.erased == 8 and report.decrypted == 0
    assert report.erased_classes == frozenset({"pii", "payment"})
    assert clear_a["order_id"] == "ord-1"  # the rest of the event survives
    clear_b, report = enc.decrypt("evt-b", b, SPEC, bsh, principal="reader")
    assert clear_b == order("bob") and report.erased == 0
    # Alice comes back as a customer: new data, new key, readable.
    a2, ash2 = enc.encrypt("evt-a2", order("alice"), SPEC, principal="p")
    assert ash2 == ash
    assert enc.decrypt("evt-a2", a2, SPEC, ash2, principal="reader")[0] == order("alice")
    assert enc.decrypt("evt-a", a, SPEC, ash, principal="reader")[1].erased == 8  # old data stays gone


def test_uncleared_reader_of_a_forgotten_subject_learns_nothing_about_erasure(enc, keys):
    out, shash = enc.encrypt("evt-a", order("alice"), SPEC, principal="p")
    keys.forget("alice")
    clear, report = enc.decrypt("evt-a", out, SPEC, shash, principal="support")
    assert clear["payment"]["card"] == REDACTED and report.redacted == 2 and report.erased == 6


@pytest.mark.parametrize("fail_classes", [None, frozenset({"payment"})], ids=["all", "second-class-only"])
def test_key_source_failure_on_encrypt_raises_and_returns_nothing(keys, fail_classes):
    enc = FieldEncryptor(FailingKeys(keys, fail_classes=fail_classes, decrypt=False))
    data = order()
    before = copy.deepcopy(data)
    with pytest.raises(KMSUnavailable) as ei:
        enc.encrypt("evt-1", data, SPEC, principal="p")
    assert data == before
    assert isinstance(ei.value, KeyServiceError)
    assert "alice" not in str(ei.value) and "alice" not in repr(ei.value)


def test_key_source_failure_on_decrypt_raises_instead_of_delivering(enc, keys):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    broken = FieldEncryptor(FailingKeys(keys, encrypt=False))
    with pytest.raises(KMSUnavailable):
        broken.decrypt("evt-1", out, SPEC, shash, principal="reader")
    partly = FieldEncryptor(FailingKeys(keys, fail_classes=frozenset({"payment"}), encrypt=False))
    with pytest.raises(KMSUnavailable):
        partly.decrypt("evt-1", out, SPEC, shash, principal="reader")


@pytest.mark.parametrize("path", SENSITIVE)
def test_plaintext_where_a_token_belongs_is_refused(enc, path):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    forged = put(out, path, SENTINEL)
    for principal in ("reader", "stranger"):  # even a reader who could not decrypt it anyway
        with pytest.raises(TokenError) as ei:
            enc.decrypt("evt-1", forged, SPEC, shash, principal=principal)
        assert path in str(ei.value) and ei.value.details["path"] == path
        assert SENTINEL not in str(ei.value) and SENTINEL not in repr(ei.value)


@pytest.mark.parametrize("bad", [42, None, {"x": 1}, ["ew1.g.k.AAAA"], True])
def test_non_string_values_where_a_token_belongs_are_refused(enc, bad):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    with pytest.raises(TokenError):
        enc.decrypt("evt-1", put(out, "customer.email", bad), SPEC, shash, principal="reader")


def test_token_moved_to_another_event_is_refused(enc):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    with pytest.raises(TokenError):
        enc.decrypt("evt-2", out, SPEC, shash, principal="reader")


def test_token_moved_to_another_field_is_refused(enc):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    swaps = [("customer.email", "customer.name"), ("items[0].note", "items[1].note"),
             ("payment.card", "payment.holder")]
    for src, dst in swaps:
        moved = put(out, dst, get(out, src))
        with pytest.raises(TokenError) as ei:
            enc.decrypt("evt-1", moved, SPEC, shash, principal="reader")
        assert dst in str(ei.value)


def test_token_moved_to_another_subjects_event_is_refused(enc):
    a, ash = enc.encrypt("evt-1", order("alice"), SPEC, principal="p")
    b, bsh = enc.encrypt("evt-1", order("bob"), SPEC, principal="p")  # even with the same event id
    moved = put(b, "customer.email", a["customer"]["email"])
    with pytest.raises(TokenError):
        enc.decrypt("evt-1", moved, SPEC, bsh, principal="reader")
    # Re-labelling the envelope's subject hash does not help either.
    with pytest.raises(TokenError):
        enc.decrypt("evt-1", b, SPEC, ash, principal="reader")


def test_token_moved_to_a_field_of_another_class_is_refused(enc, keys):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    # a payment token in a pii field: the key source refuses a payment kid asked for as pii
    moved = put(out, "customer.phone", get(out, "payment.card"))
    with pytest.raises(TokenError):
        enc.decrypt("evt-1", moved, SPEC, shash, principal="support")


def test_token_relabelled_with_another_real_key_id_is_refused(enc, keys):
    a, ash = enc.encrypt("evt-1", order("alice"), SPEC, principal="p")
    b, _ = enc.encrypt("evt-2", order("bob"), SPEC, principal="p")
    _, bob_kid, _ = tokens.split(b["customer"]["email"])
    alg, _, blob = tokens.split(a["customer"]["email"])
    relabelled = put(a, "customer.email", tokens.encode_token(alg, bob_kid, blob))
    with pytest.raises(TokenError):
        enc.decrypt("evt-1", relabelled, SPEC, ash, principal="reader")


def test_forged_key_id_is_a_token_error_not_a_key_service_outage(enc):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    alg, _, blob = tokens.split(out["customer"]["email"])
    forged = put(out, "customer.email", tokens.encode_token(alg, "Forged_kid_0000000000", blob))
    with pytest.raises(TokenError) as ei:
        enc.decrypt("evt-1", forged, SPEC, shash, principal="reader")
    assert "customer.email" in str(ei.value)


def test_one_flipped_bit_in_an_encrypted_event_is_refused(enc):
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    alg, kid, blob = tokens.split(out["payment"]["card"])
    for i in range(0, len(blob) * 8, 7):
        b = bytearray(blob)
        b[i // 8] ^= 1 << (i % 8)
        flipped = put(out, "payment.card", tokens.encode_token(alg, kid, bytes(b)))
        with pytest.raises(TokenError):
            enc.decrypt("evt-1", flipped, SPEC, shash, principal="reader")


def test_deterministic_field_tokens_are_equal_per_subject_and_differ_across_subjects(enc):
    a1, _ = enc.encrypt("evt-1", order("alice"), SPEC, principal="p")
    a2, _ = enc.encrypt("evt-2", order("alice"), SPEC, principal="p")
    bob = order("bob")
    bob["customer"]["email_lookup"] = "alice@example.com"
    b1, _ = enc.encrypt("evt-3", bob, SPEC, principal="p")
    assert a1["customer"]["email_lookup"].startswith("ew1.s.")
    assert a1["customer"]["email_lookup"] == a2["customer"]["email_lookup"]  # searchable
    assert a1["customer"]["email"] != a2["customer"]["email"]  # random-nonce fields are not
    assert b1["customer"]["email_lookup"] != a1["customer"]["email_lookup"]  # same value, other subject


def test_deterministic_token_copied_to_another_subject_or_field_is_refused(enc):
    a, ash = enc.encrypt("evt-1", order("alice"), SPEC, principal="p")
    b, bsh = enc.encrypt("evt-2", order("bob"), SPEC, principal="p")
    with pytest.raises(TokenError):
        enc.decrypt("evt-2", put(b, "customer.email_lookup", a["customer"]["email_lookup"]), SPEC, bsh,
                    principal="reader")
    # a SIV token where a random-nonce (GCM) token belongs: refused even though the key matches
    swapped = put(a, "customer.email", a["customer"]["email_lookup"])
    with pytest.raises(TokenError) as ei:
        enc.decrypt("evt-1", swapped, SPEC, ash, principal="reader")
    assert "algorithm" in str(ei.value)


def test_deterministic_field_in_arrays_ignores_the_index():
    keys = MemoryKeys()
    enc = FieldEncryptor(keys)
    det = {"class": "pii", "deterministic": True}
    spec = FieldSpec.from_dict({"subject": "u", "fields": {"tags[]": det}})
    out, shash = enc.encrypt("e", {"u": 7, "tags": ["x", "y", "x"]}, spec, principal="p")
    assert out["tags"][0] == out["tags"][2] != out["tags"][1]
    assert shash == keys.subject_hash("7")  # integer subject ids are hashed as their string
    assert enc.decrypt("e", out, spec, shash, principal="p")[0] == {"u": 7, "tags": ["x", "y", "x"]}


def test_key_source_is_asked_once_per_key_per_event(keys):
    counting = CountingKeys(keys)
    enc = FieldEncryptor(counting)
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    assert sorted(c for _, c in counting.enc_calls) == ["payment", "pii"]
    enc.decrypt("evt-1", out, SPEC, shash, principal="reader")
    assert sorted(c for _, c in counting.dec_calls) == ["payment", "pii"]
    assert len(set(counting.dec_calls)) == 2


def test_subject_hash_must_match_the_spec(enc):
    out, _ = enc.encrypt("evt-1", order(), SPEC, principal="p")
    with pytest.raises(InputError):
        enc.decrypt("evt-1", out, SPEC, None, principal="reader")
    nosubj = FieldSpec.from_dict({"fields": {"x": "pii"}})
    with pytest.raises(InputError):
        enc.decrypt("evt-1", {"x": 1}, nosubj, "ab" * 32, principal="reader")


@pytest.mark.parametrize("event_id", ["", None, 7])
def test_event_id_is_required(enc, event_id):
    with pytest.raises(InputError):
        enc.encrypt(event_id, order(), SPEC, principal="p")
    with pytest.raises(InputError):
        enc.decrypt(event_id, order(), SPEC, "ab", principal="p")


def test_bad_uncleared_option_is_refused(enc):
    with pytest.raises(InputError):
        enc.decrypt("e", {}, SPEC, "ab", principal="p", uncleared="plaintext")  # type: ignore[arg-type]


def test_missing_subject_fails_closed_before_any_key_is_used(keys):
    counting = CountingKeys(keys)
    enc = FieldEncryptor(counting)
    data = order()
    del data["customer"]["id"]
    with pytest.raises(FieldSpecError) as ei:
        enc.encrypt("evt-1", data, SPEC, principal="p")
    assert "customer.id" in str(ei.value) and counting.enc_calls == []


@pytest.mark.parametrize("bad_subject", [True, 1.5, "", None, [SENTINEL], {"id": SENTINEL}])
def test_bad_subject_values_are_refused_without_echoing_them(enc, bad_subject):
    data = order()
    data["customer"]["id"] = bad_subject
    with pytest.raises(FieldSpecError) as ei:
        enc.encrypt("evt-1", data, SPEC, principal="p")
    assert SENTINEL not in str(ei.value)


@pytest.mark.parametrize("shape", [
    {"customer": SENTINEL},
    {"customer": [SENTINEL]},
    {"items": {"note": SENTINEL}},
    {"items": [SENTINEL]},
])
def test_data_in_the_wrong_shape_fails_closed_naming_the_path_not_the_value(enc, shape):
    data = {**order(), **shape}
    if "customer" in shape:
        spec = FieldSpec.from_dict({"fields": {"customer.email": "pii"}})
    else:
        spec = FieldSpec.from_dict({"fields": {"items[].note": "pii"}})
    with pytest.raises(FieldSpecError) as ei:
        enc.encrypt("evt-1", data, spec, principal="p")
    assert SENTINEL not in str(ei.value) and SENTINEL not in repr(ei.value)
    with pytest.raises(FieldSpecError):
        enc.decrypt("evt-1", data, spec, None, principal="p")


def test_non_json_sensitive_value_names_the_path_and_type_only(enc):
    data = order()
    data["customer"]["email"] = {SENTINEL}
    with pytest.raises(InputError) as ei:
        enc.encrypt("evt-1", data, SPEC, principal="p")
    assert "customer.email" in str(ei.value) and "set" in str(ei.value)
    assert SENTINEL not in str(ei.value) and SENTINEL not in repr(ei.value)


def test_event_data_must_be_an_object(enc):
    with pytest.raises(FieldSpecError):
        enc.encrypt("e", ["not", "an", "object"], SPEC, principal="p")
    with pytest.raises(InputError):
        enc.encrypt("e", "text", FieldSpec(), principal="p")


def test_overlapping_rules_are_refused(enc):
    spec = FieldSpec.from_dict({"fields": {"customer": "pii", "customer.email": "contact"}})
    with pytest.raises(FieldSpecError) as ei:
        enc.encrypt("e", order(), spec, principal="p")
    assert "customer.email" in str(ei.value)
    spec2 = FieldSpec.from_dict({"fields": {"items": "pii", "items[].note": "pii"}})
    with pytest.raises(FieldSpecError):
        enc.encrypt("e", order(), spec2, principal="p")


def test_a_whole_object_can_be_one_sensitive_value(enc):
    spec = FieldSpec.from_dict({"subject": "customer.id", "fields": {"payment": "payment"}})
    out, shash = enc.encrypt("e", order(), spec, principal="p")
    assert tokens.is_token(out["payment"])
    assert enc.decrypt("e", out, spec, shash, principal="reader")[0] == order()


def test_key_source_returning_bad_key_material_fails_closed():
    class BadKeys(MemoryKeys):
        def encryption_key(self, subject, cls, *, principal):
            return "kid ok?", b"short"

    with pytest.raises(KeyServiceError):
        FieldEncryptor(BadKeys()).encrypt("e", order(), SPEC, principal="p")


def test_errors_and_reprs_never_carry_values_or_keys(enc, keys):
    data = order(SENTINEL)
    out, shash = enc.encrypt("evt-1", data, SPEC, principal="p")
    _, report = enc.decrypt("evt-1", out, SPEC, shash, principal="support")
    # tampered: the message names the field, never the token or the value
    tampered = put(out, "customer.email", out["customer"]["email"][:-2] + "AA")
    with pytest.raises(TokenError) as ei:
        enc.decrypt("evt-1", tampered, SPEC, shash, principal="reader")
    assert "customer.email" in str(ei.value)
    assert out["customer"]["email"][20:] not in str(ei.value) + repr(ei.value)
    keys.forget(SENTINEL)
    _, report2 = enc.decrypt("evt-1", out, SPEC, shash, principal="reader")
    for text in (repr(enc), repr(keys), repr(report), str(report), repr(report2)):
        assert SENTINEL not in text and shash not in text
    for k in keys._keys.values():
        assert k.dek is None or k.dek.hex() not in repr(keys)


def test_reading_batch_asks_the_key_source_once_per_key_and_forgets_after(auth):
    """In one read batch each key id is resolved once (DEK or refusal); after the batch the key
    source decides again, so a revoked clearance applies to the next batch."""
    inner = MemoryKeys(auth)
    keys = CountingKeys(inner)
    enc = FieldEncryptor(keys)
    sealed = [(f"e{i}", *enc.encrypt(f"e{i}", order("alice"), SPEC, principal="producer")) for i in range(5)]
    with enc.reading_batch():
        for eid, data, shash in sealed:
            clear, _ = enc.decrypt(eid, data, SPEC, shash, principal="support")
            assert clear["customer"]["email"] == "alice@example.com"
            assert clear["payment"]["card"] == REDACTED  # support is not cleared for payment
    assert sorted(set(keys.dec_calls)) == sorted(keys.dec_calls) and len(keys.dec_calls) == 2  # pii + payment
    auth.revoke("support", DECRYPT, ("Class", "pii"))
    with enc.reading_batch():
        clear, _ = enc.decrypt(sealed[0][0], sealed[0][1], SPEC, sealed[0][2], principal="support")
    assert clear["customer"]["email"] == REDACTED


def test_reading_batch_never_remembers_a_forged_key_id(auth):
    """A token naming a key id the key source never issued is refused on every event of the
    batch, even after a genuine event resolved keys in the same batch."""
    enc = FieldEncryptor(MemoryKeys(auth))
    eid, good, shash = "e1", *enc.encrypt("e1", order("alice"), SPEC, principal="producer")
    stranger, _ = FieldEncryptor(MemoryKeys(auth)).encrypt("e1", order("alice"), SPEC, principal="producer")
    forged = copy.deepcopy(good)
    forged["customer"]["email"] = stranger["customer"]["email"]  # a well-formed key id never issued here
    with enc.reading_batch():
        enc.decrypt(eid, good, SPEC, shash, principal="reader")
        for _ in range(2):
            with pytest.raises(TokenError):
                enc.decrypt(eid, forged, SPEC, shash, principal="reader")
