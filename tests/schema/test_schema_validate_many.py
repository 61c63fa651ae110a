"""validate_many (a producer's send_many) gives the verdict and the error of validate, event by
event, the first invalid one raising; and the format checks' shortcuts (days 01..28 without the
calendar, the leap-second rule only for second 60, the e-mail fast path) decide exactly as the
full checks."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.schema import compile_schema, formats
from eventward.errors import ValidationError

from .conftest import order_event, order_schema
from .test_schema_fastpath import mutated_orders

ORDER = compile_schema(order_schema())


def outcome(fn, data) -> tuple[str, str, str] | None:
    try:
        fn(data)
    except ValidationError as e:
        return (e.path, e.rule, e.message)
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_orders())
def test_validate_many_agrees_with_validate(data):
    want = outcome(ORDER.validate, data)
    assert outcome(lambda d: ORDER.validate_many([order_event(), d, order_event()]), data) == want


def test_the_first_invalid_event_raises_and_valid_calls_pass():
    ORDER.validate_many([order_event() for _ in range(5)])
    ORDER.validate_many([])
    bad_type, too_big, not_json, nan = order_event(), order_event(), order_event(), order_event()
    bad_type["order_id"] = 7
    too_big["items"] = [{"sku": "SKU-0001", "qty": 1, "note": "x" * 200}] * 2000
    not_json["customer"]["name"] = {1, 2}
    nan["items"][0]["qty"] = math.nan
    for bad in (bad_type, too_big, not_json, nan):
        want = outcome(ORDER.validate, bad)
        assert want is not None
        assert outcome(lambda d: ORDER.validate_many([order_event(), d, bad_type]), bad) == want
    assert outcome(lambda d: ORDER.validate_many(iter([order_event(), d])), too_big) == outcome(ORDER.validate, too_big)


def test_a_schema_without_a_tight_validator_validates_many_as_validate():
    doc = order_schema()
    doc["properties"]["tags"] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    loose = compile_schema(doc)
    assert loose._tight is None
    dup = order_event()
    dup["tags"] = ["a", "a"]
    assert outcome(lambda d: loose.validate_many([order_event(), d]), dup) == outcome(loose.validate, dup) is not None


def _reference_date_time(v: str) -> bool:
    """The check before the shortcuts: the calendar and the leap-second rule for every value."""
    m = formats._DATE_TIME_RX.match(v)
    if m is None:
        return False
    g = m.groups()
    try:
        datetime.date(int(g[0]), int(g[1]), int(g[2]))
    except ValueError:
        return False
    return formats._time_ok(*g[3:])


_two = st.integers(0, 99).map(lambda n: f"{n:02d}")


@st.composite
def date_times(draw: st.DrawFn) -> str:
    year = draw(st.sampled_from(["0000", "0001", "1900", "2000", "2023", "2024", "9999"]))
    month = draw(st.sampled_from(["01", "02", "04", "12", "13", "00"]))
    day = draw(st.sampled_from(["00", "01", "28", "29", "30", "31", "32"]))
    hour, minute = draw(st.sampled_from(["00", "23", "15", "24"])), draw(st.sampled_from(["00", "59", "58"]))
    second = draw(st.sampled_from(["00", "59", "60", "61"]))
    zone = draw(st.sampled_from(["Z", "z", "+00:00", "-08:00", "+01:00", "+23:59"]))
    frac = draw(st.sampled_from(["", ".5", ".123456789"]))
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}{frac}{zone}"


@settings(max_examples=500, deadline=None)
@given(date_times())
def test_date_time_shortcuts_decide_as_the_calendar(v):
    assert bool(formats._date_time(v)) == _reference_date_time(v)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("0000-01-01T00:00:00Z", False),  # no year 0: the shortcut must not pass it
        ("0001-01-28T00:00:00Z", True),
        ("2023-02-29T00:00:00Z", False),
        ("2024-02-29T00:00:00Z", True),
        ("2023-04-31T00:00:00Z", False),
        ("2023-01-28T23:59:60Z", True),
        ("2023-01-28T12:00:60Z", False),
        ("2023-01-28T15:59:60-08:00", True),
    ],
)
def test_date_time_cases(value, valid):
    assert bool(formats._date_time(value)) is valid


def _email_validator(v: str) -> bool:
    """email-validator alone, as _email calls it: the reference the fast path must agree with."""
    try:
        formats.validate_email(v, check_deliverability=False, allow_quoted_local=True, allow_domain_literal=True,
                               globally_deliverable=False, allow_smtputf8=True)
    except (formats.EmailNotValidError, ValueError, UnicodeError):
        return False
    return True


@pytest.mark.parametrize(
    "value",
    ["ada.lovelace.1@example.com", "a@b.test", "a@b.TEST", "a--b@example.com", "a@ex--ample.com",
     "a@exa--mple.com", "x@localhost", "x@a.b.onion", "x@sub.example.arpa", "a.b@c-d.example.org"],
)
def test_email_fast_path_agrees_with_email_validator(value):
    assert bool(formats._email(value)) is _email_validator(value)
    if formats._plain_email(value):
        assert _email_validator(value)
