"""The Python-``re`` fast path for simple anchored patterns: same answers as RE2, never slow."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.schema.anchored import anchored
from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.regex import LinearRegex, compile_pattern

FAST = [
    r"^ord-[0-9]{10}$",
    r"^\+[0-9][0-9 -]{4,30}$",
    r"^[A-Z]{2}$",
    r"^[a-z]*$",
    r"^a?b+c{2,}d{0,3}$",
    r"^[^@]{1,64}@[^@]{1,255}$",
    r"^\d+\.\d{2}$",
    r"^\w{1,5}-\d*$",
    r"^.{0,8}$",
    r"^[^x]*x$",
    r"^[a-f0-9\-]{3}$",
    r"^[\d\w]?!$",
]
SLOW = [
    r"^[a-z]+[a-z0-9]$",  # overlapping neighbours: the engine could split the run many ways
    r"^a*a$",
    r"^\d*\d{2}$",
    r"^.*x$",
    r"^a?a?a$",
    r"[a-z]+$",
    r"^[a-z]+",
    r"^(ab)+$",
    r"^a|b$",
    r"^a+?$",
    r"^\s+$",
    r"^[]a]$",
    r"^[[a]]$",
    r"^a{,3}$",
    r"^\bx$",
    r"^x\$",
]


@pytest.mark.parametrize("pattern", FAST)
def test_simple_patterns_take_the_fast_path(pattern):
    assert isinstance(compile_pattern(pattern, "$"), re.Pattern)


@pytest.mark.parametrize("pattern", SLOW)
def test_everything_else_stays_on_re2(pattern):
    assert anchored(pattern) is None


ALPHABET = "ab-xyz@AZ09 .!+\n\u00e9"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=st.sampled_from(FAST), text=st.text(alphabet=ALPHABET + "0123456789abcdef@-ord+", max_size=40))
def test_fast_path_agrees_with_re2(pattern, text):
    assert bool(anchored(pattern).search(text)) == LinearRegex(pattern).search(text)


ATOMS = ["a", "b", "0", r"\d", r"\w", "[a-c]", "[^a]", ".", r"\-", "[0-9x]"]
QUANTS = ["", "?", "*", "+", "{2}", "{1,3}", "{0,2}", "{2,}"]


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.tuples(st.sampled_from(ATOMS), st.sampled_from(QUANTS)), min_size=1, max_size=5),
    texts=st.lists(st.text(alphabet="ab0x-_\n!\u00e9", max_size=12), min_size=1, max_size=8),
)
def test_random_patterns_the_prover_admits_agree_with_re2(parts, texts):
    pattern = "^" + "".join(a + q for a, q in parts) + "$"
    fast = anchored(pattern)
    if fast is None:
        return
    slow = LinearRegex(pattern)
    for text in texts:
        assert bool(fast.search(text)) == slow.search(text), (pattern, text)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("pattern", "evil"),
    [
        (r"^[a-z]{0,9999}[0-9]$", "a" * 9999 + "!"),
        (r"^a*b?c*d$", "a" * 30000 + "c" * 30000 + "x"),
        (r"^[^@]{1,9999}@[^@]{1,9999}$", "x" * 9000 + "@" + "y" * 9000 + "@"),
    ],
)
def test_fast_path_is_linear_on_adversarial_input(pattern, evil):
    fast = anchored(pattern)
    assert fast is not None
    t0 = time.perf_counter()
    assert not fast.search(evil)
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("fmt", "evil"),
    [
        ("date-time", "2026-01-01T00:00:00." + "1" * 200_000 + "x"),
        ("time", "00:00:00" + ".1" * 100_000),
        ("email", "a" * 200_000 + "@" + "b" * 200_000 + "@"),
        ("uri", "a" * 200_000 + "!"),
        ("hostname", "a." * 100_000),
        ("uuid", "0" * 200_000),
    ],
)
def test_formats_are_linear_on_adversarial_input(fmt, evil):
    t0 = time.perf_counter()
    assert not FORMATS[fmt](evil)
    assert time.perf_counter() - t0 < 0.5
