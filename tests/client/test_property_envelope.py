"""Property tests for the CloudEvents envelope parser: whatever bytes or JSON arrive, ``decode``
returns a valid envelope or raises one of eventward's typed input errors, never anything else
(a TypeError or KeyError from deep inside is a 500 at the gateway and a traceback in the CLI).

Inputs are random bytes and text, random JSON documents, and structure-aware mutations of a
valid envelope (attributes deleted, retyped, overlong, renamed; extensions of every JSON type).
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal import envelope
from eventward.errors import EnvelopeError, EventwardError, InputError, OversizeError

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

VALID = envelope.make("OrderPlaced", "/shop", {"order_id": "o-1", "total": 3.5}, extensions={"ewseq": 7})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["1.0", "", "2024-01-01T00:00:00Z", "0000-00-00T00:00:00Z", "9999-12-31T23:59:59.9999999999-23:59",
         "0001-01-01T00:00:00+23:59", "application/json", "text/plain", "x" * 5000,
         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=b,c=d", "https://x/y"]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
attr_names = st.sampled_from(
    [*sorted(envelope._CORE), "ewseq", "ewproducer", "ewsubject", "traceparent", "tracestate", "x", "Bad-Name", ""]
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with a few attributes deleted, replaced by arbitrary JSON, or added."""
    env: dict[str, Any] = dict(VALID)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(attr_names | st.text(min_size=1, max_size=25))
        op = draw(st.sampled_from(("delete", "set")))
        if op == "delete":
            env.pop(name, None)
        else:
            env[name] = draw(json_values)
    return env


def typed_only(raw: bytes | str) -> dict[str, Any] | None:
    """decode(raw), asserting any failure is a typed input error."""
    try:
        env = envelope.decode(raw)
    except (EnvelopeError, OversizeError) as e:
        assert isinstance(e, InputError) and e.http_status in (400, 413)
        return None
    except EventwardError as e:  # typed, but the wrong category for a malformed envelope
        raise AssertionError(f"envelope.decode raised {type(e).__name__}, not an input error") from e
    assert isinstance(env, dict)
    envelope.validate(env)  # what decode accepted is a valid envelope
    return env


@SETTINGS
@given(st.binary(max_size=300))
def test_property_envelope_random_bytes(raw: bytes) -> None:
    assert typed_only(raw) is None  # random bytes are never an event


@SETTINGS
@given(st.text(max_size=300))
def test_property_envelope_random_text(raw: str) -> None:
    assert typed_only(raw) is None  # random text is never an event


@SETTINGS
@given(json_values)
def test_property_envelope_random_json(doc: Any) -> None:
    env = typed_only(orjson.dumps(doc))
    assert env is None or env == doc  # accepted only as the object it is


@SETTINGS
@given(mutated())
def test_property_envelope_mutations_of_a_valid_event(env: dict[str, Any]) -> None:
    raw = orjson.dumps(env)
    decoded = typed_only(raw)
    if decoded is not None:
        assert envelope.decode(envelope.encode(decoded)) == decoded  # accepted means round-trips


@SETTINGS
@given(st.binary(min_size=1, max_size=40), st.integers(0, 400))
def test_property_envelope_byte_splices(chunk: bytes, at: int) -> None:
    """Bytes spliced into (or overwriting part of) a valid encoding."""
    raw = envelope.encode(VALID)
    at = min(at, len(raw))
    for spliced in (raw[:at] + chunk + raw[at:], raw[:at] + chunk + raw[at + len(chunk):]):
        env = typed_only(spliced)
        if env is not None:  # accepted only as exactly the object those bytes are, and it round-trips
            assert env == orjson.loads(spliced)
            assert envelope.decode(envelope.encode(env)) == env


def test_property_envelope_edge_times_are_typed() -> None:
    """Timestamps at the ends of the calendar, with extreme offsets: parsed or refused, typed."""
    valid = ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59")
    invalid = ("0000-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:60Z",
               "2024-01-01T00:00:00+99:99", "2024-01-01T00:00:00.1234567890123Z")
    for t in valid:
        env = typed_only(orjson.dumps({**VALID, "time": t}))
        assert env is not None and env["time"] == t
    for t in invalid:  # year 0, a day or hour past the calendar, a leap second, an offset past 23:59, 13 digits
        assert typed_only(orjson.dumps({**VALID, "time": t})) is None, t


# --- the CLI's produce input (one JSON event per line) --------------------------------------------


@SETTINGS
@given(st.binary(max_size=200) | st.builds(orjson.dumps, json_values) | st.builds(orjson.dumps, mutated()))
def test_property_envelope_produce_lines(line: bytes) -> None:
    """``eventward produce`` input lines: an event to send or an InputError naming the line."""
    from eventward._internal.cli.log import _event_of

    try:
        ev = _event_of(line, 7)
    except InputError as e:
        assert e.message.startswith("line 7:")
        return
    assert isinstance(ev, dict) and isinstance(ev["type"], str)  # data may be unset (null)
    for name in ("id", "source", "subject"):
        assert name not in ev or (isinstance(ev[name], str) and ev[name])
