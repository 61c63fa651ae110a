"""The field encryptor's hot path against the generic one: tokens it seals open with the
canonical associated data (tokens.associated_data, TokenCipher.decrypt), tokens sealed
canonically open through it, it locates exactly what FieldSpec.targets() finds, and its
shortcuts (header reuse per slot, cached key contexts, the one-pass base64url check) refuse
everything the full parse refuses."""

from __future__ import annotations

import base64
import binascii
import copy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.crypto import fields, tokens
from eventward._internal.crypto.fields import REDACTED, FieldEncryptor
from eventward._internal.crypto.tokens import GCM, SIV, TokenCipher, associated_data, key_context
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward.errors import FieldSpecError, InputError, KeyServiceError, TokenError

from .conftest import SENTINEL, SPEC, CountingKeys, order
from .test_fields_property import events

KEYS = MemoryKeys()
ENC = FieldEncryptor(KEYS)
EVENT = "evt-fast-1"


def ad_path(target: object) -> str:
    """The path a token binds: the concrete one for GCM, the schema path for SIV."""
    return target.rule.path if target.rule.deterministic else target.path  # type: ignore[attr-defined]


def place(data: dict, path: str, value: object) -> None:
    cur: object = data
    parts = re.findall(r"[^.\[\]]+", path)
    for part in parts[:-1]:
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]  # type: ignore[index]
    last = parts[-1]
    cur[int(last) if isinstance(cur, list) else last] = value  # type: ignore[index]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_sealed_tokens_open_with_the_canonical_associated_data(case):
    spec, data = case
    try:
        expected = {t.path: t.container[t.key] for t in spec.targets(data)}
    except FieldSpecError:
        return  # wrong shapes: test_fields_property holds both paths to the same refusal
    out, shash = ENC.encrypt(EVENT, data, spec, principal="p")
    for t in spec.targets(out):
        alg, kid, _ = tokens.split(t.container[t.key])
        assert alg == (SIV if t.rule.deterministic else GCM)
        dek = KEYS.decryption_key(kid, t.rule.cls, principal="p")
        # A fresh cipher: no cached handle or context of the encryptor is involved.
        clear = TokenCipher().decrypt(
            t.container[t.key], dek, cls=t.rule.cls, subject_hash=shash, path=ad_path(t), event_id=EVENT
        )
        assert clear == expected[t.path]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_canonically_sealed_tokens_open_through_the_hot_path(case):
    spec, data = case
    try:
        targets = list(spec.targets(data))
    except FieldSpecError:
        return
    subject = spec.subject_of(data)
    shash = None if subject is None else KEYS.subject_hash(subject)
    sealed = copy.deepcopy(data)
    reference = TokenCipher()
    for t in targets:
        kid, dek = KEYS.encryption_key(subject, t.rule.cls, principal="p")
        token = reference.encrypt(
            t.container[t.key], kid, dek, cls=t.rule.cls, subject_hash=shash, path=ad_path(t),
            event_id=EVENT, deterministic=t.rule.deterministic,
        )
        place(sealed, t.path, token)
    clear, report = ENC.decrypt(EVENT, sealed, spec, shash, principal="p")
    assert clear == data
    assert report.decrypted == len(targets) and report.erased == report.redacted == 0
    assert report.classes == frozenset(t.rule.cls for t in targets)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_locate_finds_exactly_the_targets_and_copies_on_write(case):
    spec, data = case
    before = copy.deepcopy(data)
    plan = ENC._plan(spec)
    try:
        expected = sorted((t.path, repr(t.container[t.key])) for t in spec.targets(data))
    except FieldSpecError:
        with pytest.raises(FieldSpecError):
            fields._locate(spec, plan, data)
        return
    out, located, count = fields._locate(spec, plan, data)
    found = sorted(
        (path, repr(src[k]))
        for src, _, batches in located
        for _, _, leaves in batches
        for k, path, _ in leaves
    )
    assert found == expected and count == len(expected)
    for _, dst, batches in located:  # every container a token will be written to is the output's own
        for _, _, leaves in batches:
            for k, _path, _ in leaves:
                dst[k] = "written"
    assert data == before and out is not data


def test_mixed_key_versions_in_one_event_each_open_with_one_key_source_call():
    inner = MemoryKeys()
    counting = CountingKeys(inner)
    enc = FieldEncryptor(counting)
    old, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    inner.rotate("alice", "pii")
    new, _ = enc.encrypt("evt-1", order(), SPEC, principal="p")
    mixed = copy.deepcopy(new)
    mixed["customer"]["email"] = old["customer"]["email"]  # an older key version mid-slot
    counting.dec_calls.clear()
    clear, report = enc.decrypt("evt-1", mixed, SPEC, shash, principal="p")
    assert clear == order() and report.decrypted == 8
    assert len(counting.dec_calls) == len(set(counting.dec_calls)) == 3  # pii old + new, payment


def _second_token(out: dict) -> str:
    return out["customer"]["email"]  # sealed after customer.name, under the same header


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("B" if t[-1] == "A" else "A"),  # payload bit flip (may be non-canonical)
        lambda t: t[:-1] + chr(ord(t[-1]) ^ 1) if t[-1].isalnum() else t[:-1] + "A",
        lambda t: t[:40] + "+" + t[41:],  # standard alphabet
        lambda t: t[:40] + "/" + t[41:],
        lambda t: t + "=",  # padding
        lambda t: t + "==",
        lambda t: t[:40] + "." + t[41:],  # a fifth part
        lambda t: t[:40] + "é" + t[41:],  # not ASCII
        lambda t: t[:40] + " " + t[41:],
        lambda t: t[: t.index(".", 6) + 1],  # empty payload
        lambda t: t[: t.index(".", 6) + 9],  # too short
    ],
    ids=range(11),
)
def test_a_token_behind_a_reused_header_is_still_fully_checked(tamper):
    out, shash = ENC.encrypt("evt-1", order(), SPEC, principal="p")
    original = _second_token(out)
    bad = tamper(original)
    assert bad != original
    forged = copy.deepcopy(out)
    forged["customer"]["email"] = bad
    with pytest.raises(TokenError) as ei:
        ENC.decrypt("evt-1", forged, SPEC, shash, principal="p")
    assert ei.value.details["path"] == "customer.email"


def test_non_canonical_last_character_is_refused_even_when_the_bytes_agree():
    out, shash = ENC.encrypt("evt-1", order(), SPEC, principal="p")
    token = _second_token(out)
    payload = token[token.index(".", 6) + 1 :]
    if len(payload) % 4 in (2, 3):  # the last character carries unused low bits
        alphabet = tokens._B64_ALPHABET
        twin = alphabet[alphabet.index(payload[-1]) | 1]  # same bytes, non-zero padding bit
        forged = copy.deepcopy(out)
        forged["customer"]["email"] = token[:-1] + twin
        same = base64.urlsafe_b64decode(payload[:-1] + twin + "==")
        assert base64.urlsafe_b64decode(payload + "==") == same
        with pytest.raises(TokenError, match="canonical"):
            ENC.decrypt("evt-1", forged, SPEC, shash, principal="p")


def test_a_str_subclass_cannot_fake_the_header_check():
    class Liar(str):
        def startswith(self, *args: object) -> bool:
            return True

    out, shash = ENC.encrypt("evt-1", order(), SPEC, principal="p")
    forged = copy.deepcopy(out)
    forged["customer"]["email"] = Liar(SENTINEL)
    with pytest.raises(TokenError) as ei:
        ENC.decrypt("evt-1", forged, SPEC, shash, principal="p")
    assert SENTINEL not in str(ei.value)


def test_a_token_moved_within_a_slot_fails_behind_the_reused_header():
    a, shash = ENC.encrypt("evt-1", order(), SPEC, principal="p")
    b, _ = ENC.encrypt("evt-2", order(), SPEC, principal="p")  # same subject: same key, same header
    assert _second_token(a).split(".")[2] == _second_token(b).split(".")[2]
    forged = copy.deepcopy(a)
    forged["customer"]["email"] = _second_token(b)
    with pytest.raises(TokenError) as ei:
        ENC.decrypt("evt-1", forged, SPEC, shash, principal="p")
    assert ei.value.details["path"] == "customer.email"


def test_malformed_token_in_a_class_the_reader_may_not_read_is_still_refused(auth):
    enc = FieldEncryptor(MemoryKeys(auth))
    out, shash = enc.encrypt("evt-1", order(), SPEC, principal="p")
    assert enc.decrypt("evt-1", out, SPEC, shash, principal="support")[0]["payment"]["holder"] == REDACTED
    # The second token of the denied slot: it cannot be verified without the key, but it must
    # still be a well-formed token (plaintext or a mangled token is refused, never redacted).
    for bad in (out["payment"]["holder"] + "=", out["payment"]["holder"][:-3] + "+/A", SENTINEL):
        forged = copy.deepcopy(out)
        forged["payment"]["holder"] = bad
        with pytest.raises(TokenError) as ei:
            enc.decrypt("evt-1", forged, SPEC, shash, principal="support")
        assert ei.value.details["path"] == "payment.holder"


@pytest.mark.parametrize("bad", [42, b"ab", ["ab"]])
def test_subject_hash_must_be_a_string(bad):
    out, _ = ENC.encrypt("evt-1", order(), SPEC, principal="p")
    with pytest.raises(InputError):
        ENC.decrypt("evt-1", out, SPEC, bad, principal="p")


def test_cached_key_contexts_equal_the_canonical_ones_and_stay_bounded():
    cipher = TokenCipher(max_keys=8)
    dek = bytes(range(32))
    h, ctx = cipher.bound("kid-1", dek, GCM, "pii", "ab" * 32)
    assert ctx == key_context(GCM, "kid-1", "pii", "ab" * 32) == h.context(GCM, "pii", "ab" * 32)
    assert cipher.bound("kid-1", dek, SIV, "pii", None)[1] == key_context(SIV, "kid-1", "pii", None)
    assert cipher.bound("kid-1", dek, GCM, "pii", "ab" * 32)[0] is h
    for i in range(100):  # attacker-chosen subject hashes cannot grow it
        cipher.bound("kid-1", dek, GCM, "pii", f"{i:064x}")
    assert len(cipher._bound) <= 8 and len(cipher._handles) <= 8
    cipher.clear()
    assert not cipher._bound and not cipher._handles
    for kid, bad in (("kid-1", b"short"), ("bad kid", dek), ("kid-1", bytearray(dek))):
        with pytest.raises(KeyServiceError):
            cipher.bound(kid, bad, GCM, "pii", None)  # type: ignore[arg-type]


def test_opening_for_decryption_equals_bound_and_still_refuses_a_bad_key():
    cipher = TokenCipher(max_keys=8)
    dek = bytes(range(32))
    h, ctx = cipher.opening("kid-1", dek, GCM, "pii", "ab" * 32)
    assert ctx == key_context(GCM, "kid-1", "pii", "ab" * 32) and not cipher._bound  # a key met once is not kept
    h = cipher.opening("kid-1", dek, GCM, "pii", "ab" * 32)[0]  # met again: kept from now on
    assert cipher.opening("kid-1", dek, GCM, "pii", "ab" * 32)[0] is h
    assert all(dek not in slot for slot in cipher._once)  # what it remembers of keys met once: no key bytes
    sealed = TokenCipher().handle("kid-1", dek).seal("v", ctx + b"x", bytes(12))
    assert h.open(GCM, tokens.split(sealed)[2], ctx + b"x") == "v" and repr(h) == "KeyHandle(kid='kid-1')"
    assert cipher.opening("kid-1", dek, SIV, "pii", None)[1] == key_context(SIV, "kid-1", "pii", None)
    for _ in range(2):
        for i in range(100):
            cipher.opening("kid-1", dek, GCM, "pii", f"{i:064x}")
    assert len(cipher._bound) <= 8 and len(cipher._once) <= 8
    for bad in (b"short", bytearray(dek), None):
        with pytest.raises(KeyServiceError):
            cipher.opening("kid-2", bad, GCM, "pii", None)  # type: ignore[arg-type]


def test_clear_cache_drops_the_cached_contexts_too():
    enc = FieldEncryptor(MemoryKeys())
    enc.encrypt("evt-1", order(), SPEC, principal="p")
    assert enc._cipher._bound
    enc.clear_cache()
    assert not enc._cipher._bound and not enc._cipher._handles


_URL = re.compile(r"ew1\.([gs])\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]*)")


def reference_split(text: str) -> tuple[str, str, bytes]:
    """The token grammar written out plainly: full match, URL-safe alphabet, canonical."""
    m = _URL.fullmatch(text)
    if m is None or len(m[3]) % 4 == 1:
        raise TokenError("malformed")
    blob = base64.urlsafe_b64decode(m[3] + "=" * (-len(m[3]) % 4))
    if base64.urlsafe_b64encode(blob).rstrip(b"=").decode() != m[3]:
        raise TokenError("not canonical")
    if len(blob) < (29 if m[1] == GCM else 17):
        raise TokenError("too short")
    return m[1], m[2], blob


_TOKEN_CHARS = st.sampled_from("AQgw-_+/=.é \nZz09ew1gs")


@st.composite
def token_like(draw: st.DrawFn) -> str:
    alg = draw(st.sampled_from("gsx"))
    kid = draw(st.text(st.sampled_from("ab-_Z9. "), min_size=0, max_size=6))
    blob = draw(st.binary(min_size=0, max_size=48))
    text = f"ew1.{alg}.{kid}." + base64.urlsafe_b64encode(blob).decode().rstrip("=")
    for _ in range(draw(st.integers(0, 2))):  # a few edits anywhere, often in the payload
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(_TOKEN_CHARS) + text[i + draw(st.integers(0, 1)) :]
    return text


@settings(max_examples=1500, deadline=None)
@given(token_like() | st.text(max_size=60))
def test_split_accepts_exactly_the_reference_grammar(text):
    try:
        expected = reference_split(text)
    except (TokenError, binascii.Error, ValueError):
        expected = None
    try:
        got = tokens.split(text)
    except TokenError:
        got = None
    assert got == expected
    if got is not None:
        alg, kid, start = tokens.parse_header(text)
        assert (alg, kid, tokens.decode_payload(text, start, alg)) == got


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_token_encoding_is_unpadded_url_safe_base64(blob):
    reference = base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
    assert tokens._b64(blob) == reference
    if len(blob) >= 29:
        assert tokens.split(tokens.encode_token(GCM, "k", blob)) == (GCM, "k", blob)


def test_deterministic_and_random_fields_of_one_class_share_one_key_source_call():
    counting = CountingKeys(MemoryKeys())
    enc = FieldEncryptor(counting)
    spec = FieldSpec.from_dict(
        {"subject": "u", "fields": {"a": "pii", "b": {"class": "pii", "deterministic": True}}}
    )
    out, shash = enc.encrypt("e", {"u": "x", "a": 1, "b": 2}, spec, principal="p")
    assert counting.enc_calls == [("x", "pii")]
    assert out["a"].startswith("ew1.g.") and out["b"].startswith("ew1.s.")
    assert enc.decrypt("e", out, spec, shash, principal="p")[0] == {"u": "x", "a": 1, "b": 2}
    assert len(counting.dec_calls) == 1
    ad = associated_data(SIV, out["b"].split(".")[2], "pii", shash, "b")
    dek = counting.inner.decryption_key(out["b"].split(".")[2], "pii", principal="p")
    assert TokenCipher().handle(out["b"].split(".")[2], dek).open(SIV, tokens.split(out["b"])[2], ad) == 2


def test_headers_are_parsed_once_per_slot_and_key(monkeypatch):
    """The attacks above hit the reused-header path: only the first token of a slot is parsed."""
    out, shash = ENC.encrypt("evt-1", order(), SPEC, principal="p")
    calls: list[str] = []
    real = tokens.parse_header

    def counting(token: object) -> tuple[str, str, int]:
        calls.append(str(token)[:6])
        return real(token)

    monkeypatch.setattr(tokens, "parse_header", counting)
    assert ENC.decrypt("evt-1", out, SPEC, shash, principal="p")[0] == order()
    # pii/GCM (name, email, phone, items[].note), pii/SIV (email_lookup), payment/GCM (card, holder)
    assert sorted(calls) == ["ew1.g.", "ew1.g.", "ew1.s."]


def test_concurrent_use_with_a_tiny_evicting_cache_round_trips():
    """Caches are read lock-free and evicted under a lock: threads hammering a cache smaller
    than the working set must still seal and open every event correctly."""
    import threading

    enc = FieldEncryptor(MemoryKeys(), cipher=TokenCipher(max_keys=3))
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(150):
                data = order(f"cust{(n * 7 + i) % 11}")
                out, shash = enc.encrypt(f"evt-{n}-{i}", data, SPEC, principal="p")
                assert enc.decrypt(f"evt-{n}-{i}", out, SPEC, shash, principal="p")[0] == data
        except BaseException as e:  # reported below, in the test thread
            failures.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(enc._cipher._bound) <= 3 and len(enc._cipher._handles) <= 3
