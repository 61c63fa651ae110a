"""Formats follow their standards, and ``const``/``enum`` object values can be sent.

Round 1 (issue 23): ``date`` accepted days that do not exist, ``email``/``hostname``/``uri``/
``ipv6`` accepted values their RFCs refuse, and a ``const`` or ``enum`` whose value is an object
was accepted at registration but unsatisfiable (the closed-object default refused the value).
The whole JSON Schema test suite runs in tests/conformance; these pin each finding on the
registry's own strict path, through the fast path and the detailed one.
"""

from __future__ import annotations

from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.schema import formats
from eventward._internal.schema.compiled import compile_schema
from eventward._internal.schema.formats import FORMATS
from eventward.errors import SchemaError, ValidationError


def _schema(node: dict[str, Any]) -> Any:
    return compile_schema({"type": "object", "properties": {"v": node}, "required": ["v"]})


def _valid(compiled: Any, value: Any) -> bool:
    fast = True
    try:
        compiled.validate({"v": value})
    except ValidationError:
        fast = False
    assert (compiled.problem({"v": value}) is None) == fast  # fast and detailed paths agree
    return fast


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("date", "2021-02-29"),
        ("date", "2021-04-31"),
        ("date-time", "2021-02-29T10:00:00Z"),
        ("date-time", "1990-12-31T22:59:60Z"),  # a leap second is only valid at 23:59 UTC
        ("time", "22:59:60Z"),
        ("email", "joe..bloggs@example.com"),
        ("email", ".joe@example.com"),
        ("hostname", "XN--aa---o47jg78q"),
        ("hostname", "xn--X"),
        ("uri", "http://<>.com"),
        ("uri", "https://[::1%eth0]/"),
        ("ipv6", "fe80::a%eth1"),
    ],
)
def test_attack_format_accepts_what_its_standard_refuses(fmt: str, value: str) -> None:
    assert not FORMATS[fmt](value)
    assert not _valid(_schema({"type": "string", "format": fmt}), value)


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("email", "joe@exa mple.com"),
        ("hostname", "-a-host-name-that-starts-with--"),
        ("hostname", "a" * 64 + ".com"),
        ("uri", "http:// shouldfail.com"),
        ("uri", "//foo.bar/?baz=qux#quux"),
        ("ipv6", "::1 "),
        ("ipv4", "1.2.3.\u09ea"),
    ],
)
def test_format_still_refuses_what_it_refused_before(fmt: str, value: str) -> None:
    assert not FORMATS[fmt](value)
    assert not _valid(_schema({"type": "string", "format": fmt}), value)


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("date", "2020-02-29"),
        ("date-time", "1998-12-31T23:59:60Z"),
        ("date-time", "1998-12-31T15:59:60.123-08:00"),
        ("time", "23:59:60+00:00"),
        ("email", "joe.bloggs@example.com"),
        ("email", '"joe bloggs"@example.com'),
        ("email", "joe.bloggs@[127.0.0.1]"),
        ("hostname", "xn--4gbwdl.xn--wgbh1c"),
        ("hostname", "www.example.com."),
        ("uri", "http://foo.bar/?baz=qux#quux"),
        ("uri", "urn:oasis:names:specification:docbook:dtd:xml:4.1.2"),
        ("uri", "http://[2001:db8::7]/c=GB?objectClass?one"),
        ("ipv6", "::ffff:192.168.0.1"),
        ("ipv4", "192.168.0.1"),
    ],
)
def test_format_accepts_what_its_standard_accepts(fmt: str, value: str) -> None:
    assert FORMATS[fmt](value)
    assert _valid(_schema({"type": "string", "format": fmt}), value)


@pytest.mark.parametrize(
    "node",
    [
        {"const": {"k": 1, "nested": {"x": [1, 2]}}},
        {"enum": [{"k": 1, "nested": {"x": [1, 2]}}, "other"]},
        {"type": "object", "enum": [{"k": 1, "nested": {"x": [1, 2]}}]},
        {"const": [{"k": 1}]},
    ],
)
def test_attack_const_or_enum_object_value_is_unsatisfiable(node: dict[str, Any]) -> None:
    """The listed value itself is valid, and only it: no closed-object default hides it."""
    compiled = _schema(node)
    value = node["const"] if "const" in node else node["enum"][0]
    assert _valid(compiled, value)
    assert not _valid(compiled, {"k": 2})
    assert not _valid(compiled, {"k": 1, "nested": {"x": [1, 2]}, "extra": True})


def test_enum_strings_keep_a_length_bound_that_admits_every_value() -> None:
    long = "x" * 5000
    compiled = _schema({"enum": [long, "y"]})
    assert compiled.tree["properties"]["v"]["maxLength"] == 5000
    assert _valid(compiled, long) and _valid(compiled, "y") and not _valid(compiled, "z")


def test_attack_const_value_shaped_like_a_ref_is_refused_at_registration() -> None:
    """A ``$ref`` key inside a ``const`` value is data; the detailed generator tried to resolve
    it and the registry refused a valid schema ("cannot be compiled")."""
    compiled = _schema({"const": {"$ref": "#/$defs/a_string"}})
    assert _valid(compiled, {"$ref": "#/$defs/a_string"})
    assert not _valid(compiled, "a string")
    err = compiled.problem({"v": "a string"})
    assert err is not None and err.path == "$"


_EMAIL_CHARS = "aZ09.-_+!'@\"[]:() \u00e9"
_EMAILS = st.one_of(
    st.text(alphabet=_EMAIL_CHARS, max_size=30),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
        st.text(alphabet="aZ09.-_+!'#", min_size=1, max_size=70),
        st.lists(st.text(alphabet="aZ09-", min_size=1, max_size=65), min_size=1, max_size=3),
        st.sampled_from(["com", "org", "test", "local", "c0m", "x", "xn--p1ai", "COM"]),
    ),
)


def _email_validator_accepts(v: str) -> bool:
    try:
        validate_email(
            v,
            check_deliverability=False,
            allow_quoted_local=True,
            allow_domain_literal=True,
            globally_deliverable=False,
            allow_smtputf8=True,
        )
    except (EmailNotValidError, ValueError, UnicodeError):
        return False
    return True


@settings(max_examples=400, deadline=None, database=None)
@given(_EMAILS)
def test_email_fast_path_agrees_with_email_validator(v: str) -> None:
    """The microsecond path only ever accepts what email-validator accepts; the verdict is
    always email-validator's."""
    expected = _email_validator_accepts(v) and len(v) <= formats.MAX_EMAIL
    if formats._plain_email(v):
        assert expected, v
    assert bool(FORMATS["email"](v)) == expected, v


@settings(max_examples=400, deadline=None, database=None)
@given(st.text(alphabet="aZ09-.", max_size=80) | st.builds(lambda n: "a" * n + ".b", st.integers(55, 70)))
def test_hostname_fast_path_agrees_with_the_label_checks(v: str) -> None:
    if "--" not in v and 1 <= len(v) <= 253:
        assert bool(FORMATS["hostname"](v)) == formats._hostname_by_label(v), v


def test_counts_written_as_integral_numbers_are_integers() -> None:
    """JSON Schema treats 2.0 as the integer 2 (the suite's "with a decimal" cases)."""
    compiled = _schema({"type": "string", "maxLength": 2.0, "minLength": 1.0})
    assert compiled.tree["properties"]["v"]["maxLength"] == 2
    assert _valid(compiled, "ab") and not _valid(compiled, "abc") and not _valid(compiled, "")
    with pytest.raises(SchemaError):
        _schema({"type": "string", "maxLength": 2.5})
