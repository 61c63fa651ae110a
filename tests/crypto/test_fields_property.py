"""Property tests: arbitrary JSON events under arbitrary field specs round-trip, leak no
sensitive value, leave their input alone, and find exactly what FieldSpec.targets() finds."""

from __future__ import annotations

import copy

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.crypto import tokens
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.fieldspec import FieldRule, FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward.errors import FieldSpecError

NAMES = ("a", "b", "c", "d")
KEY_NAMES = (*NAMES, "x", "y")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
)
keys_ = st.sampled_from(KEY_NAMES)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys_, inner, max_size=4),
    max_leaves=20,
)
segments = st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), min_size=1, max_size=3)


def path_of(segs: list[tuple[str, bool]]) -> str:
    return ".".join(n + ("[]" if arr else "") for n, arr in segs)


@st.composite
def specs(draw: st.DrawFn) -> FieldSpec:
    """Non-overlapping rules (overlap is refused by design and tested elsewhere)."""
    rules: list[FieldRule] = []
    taken: list[tuple[str, ...]] = []
    for segs in draw(st.lists(segments, max_size=4)):
        names = tuple(n for n, _ in segs)
        if any(names[: len(t)] == t or t[: len(names)] == names for t in taken):
            continue
        taken.append(names)
        rules.append(FieldRule(path_of(segs), draw(st.sampled_from(("pii", "payment"))), draw(st.booleans())))
    subject = draw(st.sampled_from((None, "sub", "meta.owner")))
    return FieldSpec(tuple(rules), subject)


def grow(draw: st.DrawFn, node: dict, segs: list[tuple[str, bool]]) -> None:
    """Make sure ``node`` holds something at ``segs`` (unless the shape is already taken)."""
    (name, is_array), rest = segs[0], segs[1:]
    if is_array:
        items = node.setdefault(name, [])
        if not isinstance(items, list):
            return
        if not items:
            items.extend(draw(st.lists(json_values if not rest else st.just(None), min_size=1, max_size=3)))
        for i, item in enumerate(items):
            if rest:
                if not isinstance(item, dict):
                    items[i] = item = {}
                grow(draw, item, rest)
        return
    if not rest:
        node.setdefault(name, draw(json_values))
        return
    child = node.setdefault(name, {})
    if isinstance(child, dict):
        grow(draw, child, rest)


@st.composite
def events(draw: st.DrawFn) -> tuple[FieldSpec, dict]:
    spec = draw(specs())
    data = draw(st.dictionaries(st.sampled_from(KEY_NAMES), json_values, max_size=4))
    for rule in spec.rules:
        if draw(st.integers(0, 4)):  # mostly present, sometimes left to chance
            grow(draw, data, [(n, a) for n, a in rule.segments])
    if spec.subject_path == "sub":
        data["sub"] = draw(st.text(min_size=1, max_size=12) | st.integers(0, 2**63 - 1))
    elif spec.subject_path == "meta.owner":
        data["meta"] = {"owner": draw(st.text(min_size=1, max_size=12))}
    return spec, data


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    return []


KEYS = MemoryKeys()
ENC = FieldEncryptor(KEYS)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_any_event_round_trips_and_hides_every_sensitive_value(case):
    spec, data = case
    before = copy.deepcopy(data)
    try:
        expected = [(t.path, t.container[t.key]) for t in spec.targets(data)]
    except FieldSpecError:
        # The data does not fit the spec's shape: the encryptor must refuse it the same way.
        try:
            ENC.encrypt("evt", data, spec, principal="p")
        except FieldSpecError:
            assert data == before
            return
        raise AssertionError("encrypt accepted data that FieldSpec.targets() refuses") from None
    out, shash = ENC.encrypt("evt", data, spec, principal="p")
    assert data == before  # the input is never modified
    assert (shash is None) == (spec.subject_path is None)

    # Exactly the targets FieldSpec finds became tokens, and only those.
    encrypted = {t.path: t.container[t.key] for t in spec.targets(out)}
    assert list(encrypted) == [p for p, _ in expected]
    assert all(tokens.is_token(v) for v in encrypted.values())

    # No sensitive string shows up anywhere in the encrypted event (unless it is also clear
    # elsewhere in the event, or too short to mean anything next to base64 text).
    raw = orjson.dumps(out)
    for _, value in expected:
        for s in strings_in(value):
            needle = orjson.dumps(s)
            if len(s) >= 6 and needle not in orjson.dumps(before).replace(needle, b"", 1):
                assert needle not in raw, "a sensitive value leaked into the encrypted event"

    clear, report = ENC.decrypt("evt", out, spec, shash, principal="p")
    assert clear == data
    assert report.decrypted == len(expected) and report.erased == report.redacted == 0


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40) | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False), st.booleans())
def test_deterministic_rules_give_equal_tokens_for_equal_values_per_subject(value, same_subject):
    spec = FieldSpec.from_dict({"subject": "s", "fields": {"v[]": {"class": "pii", "deterministic": True}}})
    a, _ = ENC.encrypt("e1", {"s": "alice", "v": [value, value]}, spec, principal="p")
    b, _ = ENC.encrypt("e2", {"s": "alice" if same_subject else "bob", "v": [value]}, spec, principal="p")
    assert a["v"][0] == a["v"][1]
    assert (a["v"][0] == b["v"][0]) == same_subject
