"""Metadata only: the record API refuses payloads, raw subjects, non-scalars and oversize input.

The log cannot tell PII from an id, so the policy is structural: ``meta`` takes bounded
scalars under identifier keys, payload-carrying names are refused, a subject is only
accepted as ``subject_hash=``. Every refusal is typed, names the key and rule, never the
value, and writes nothing. (The lead's end-to-end test checks the demo's PII never reaches
the raw audit database.)
"""

from __future__ import annotations

import math

import pytest

from eventward._internal.audit.records import MAX_META_KEYS, MAX_REASON, MAX_TEXT, PAYLOAD_KEYS
from eventward.errors import EventwardError, OversizeError, ValidationError

SENTINEL = "alice.sentinel@example.com"


def attempt(log, **kw):
    base = {"principal": "svc", "resource": "Topic::orders"}
    base.update(kw)
    return log.record("order.publish", **base)


def assert_no_leak(err: EventwardError) -> None:
    for text in (str(err), repr(err), repr(err.details)):
        assert SENTINEL not in text and "sentinel" not in text


@pytest.mark.parametrize(
    "value",
    [[SENTINEL], {"email": SENTINEL}, SENTINEL.encode(), {SENTINEL}, (SENTINEL,), object()],
    ids=["list", "dict", "bytes", "set", "tuple", "object"],
)
def test_non_scalar_meta_is_refused_without_echoing_it(log, value):
    with pytest.raises(ValidationError) as ei:
        attempt(log, customer=value)
    assert ei.value.rule == "scalar" and ei.value.path == "meta.customer"
    assert_no_leak(ei.value)
    assert log.size() == 0


@pytest.mark.parametrize("key", sorted(PAYLOAD_KEYS))
def test_payload_and_raw_subject_keys_are_refused(log, key):
    with pytest.raises(ValidationError) as ei:
        attempt(log, **{key: SENTINEL})
    assert ei.value.rule == ("subject_hash_required" if key == "subject" else "no_payloads")
    assert_no_leak(ei.value)
    assert log.size() == 0


def test_subject_hash_must_look_like_a_keyed_hash(log):
    with pytest.raises(ValidationError) as ei:
        attempt(log, subject_hash=SENTINEL)
    assert ei.value.rule == "subject_hash_format"
    assert_no_leak(ei.value)
    attempt(log, subject_hash="3f2a9c0d4e5b6a7f8091a2b3c4d5e6f7")
    assert log.get(0).meta["subject_hash"] == "3f2a9c0d4e5b6a7f8091a2b3c4d5e6f7"


@pytest.mark.parametrize(
    ("kw", "rule"),
    [
        ({"principal": "p" * (MAX_TEXT + 1)}, "max_length"),
        ({"resource": "r" * (MAX_TEXT + 1)}, "max_length"),
        ({"reason": "x" * (MAX_REASON + 1)}, "max_length"),
        ({"note": SENTINEL + "x" * MAX_TEXT}, "max_length"),
        ({f"k{i}": i for i in range(MAX_META_KEYS + 1)}, "max_keys"),
        # within every per-field bound, but 4-byte characters push the record over its byte limit
        ({f"k{i}": "\U0001f600" * MAX_TEXT for i in range(MAX_META_KEYS)}, "max_record_bytes"),
    ],
    ids=["principal", "resource", "reason", "meta-string", "meta-keys", "record-bytes"],
)
def test_oversize_input_is_refused(log, kw, rule):
    with pytest.raises(OversizeError) as ei:
        attempt(log, **kw)
    assert ei.value.details["rule"] == rule
    assert_no_leak(ei.value)
    assert log.size() == 0


@pytest.mark.parametrize(
    ("kw", "rule"),
    [
        ({"ratio": math.nan}, "finite"),
        ({"ratio": math.inf}, "finite"),
        ({"count": 2**64}, "int_range"),
        ({"principal": "svc\nINJECTED"}, "no_control_chars"),
        ({"note": "a\x1b[31mred"}, "no_control_chars"),
        ({"outcome": "OK!"}, "format"),
        ({"principal": 42}, "type"),
    ],
)
def test_malformed_fields_are_refused_with_their_rule(log, kw, rule):
    with pytest.raises(ValidationError) as ei:
        attempt(log, **kw)
    assert ei.value.rule == rule
    assert log.size() == 0


@pytest.mark.parametrize("action", ["", "has space", "x" * 65, "1starts.with.digit", "semi;colon"])
def test_action_names_are_identifiers(log, action):
    with pytest.raises(ValidationError):
        log.record(action, principal="p", resource="r")


def test_meta_keys_must_be_identifiers(log):
    for key in ("has-dash", "1digit", "dot.ted"):
        with pytest.raises(ValidationError) as ei:
            log.record("a.b", principal="p", resource="r", **{key: 1})
        assert ei.value.rule == "identifier"


def test_a_refusal_loses_nothing_already_accepted(home):
    from eventward._internal.audit.log import AuditLog

    with AuditLog.open(home, flush_every=10_000, flush_ms=60_000) as log:
        attempt(log, kid="k1")
        with pytest.raises(ValidationError):
            attempt(log, payload={"card": SENTINEL})
        attempt(log, kid="k2")
        assert [r.meta["kid"] for r in log.tail(5)] == ["k1", "k2"]
    assert SENTINEL.encode() not in home.audit_db.read_bytes()


def test_reason_is_bounded_text_for_explanations(log):
    attempt(log, reason="legal hold: case 2024-17 " + "x" * 200)
    assert log.get(0).reason.startswith("legal hold")


def test_str_subclasses_are_stored_as_plain_strings(log):
    class Tagged(str):
        pass

    log.append_many(
        [
            {
                "action": Tagged("a.b"),
                "principal": Tagged("svc"),
                "resource": "r",
                "meta": {Tagged("kid"): Tagged("k1"), Tagged("kek"): "plain"},
            }
        ]
    )
    rec = log.get(0)
    assert (rec.action, rec.principal, rec.meta) == ("a.b", "svc", {"kid": "k1", "kek": "plain"})
    assert all(type(k) is str for k in rec.meta)
    with pytest.raises(ValidationError):
        log.record(Tagged("bad action!"), principal="p", resource="r")
