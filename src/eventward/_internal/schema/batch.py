"""Format and pattern checks over many strings at once, for ``validate_many``.

On the order workload the tight validator spends two thirds of its time in about nine calls
per event to a regex or format function (0.3-1.5 µs each, mostly call overhead); its own
structural checks cost about 2 µs per event, as much as jsonschema_rs's Rust validator. So a
batch of events is checked structurally event by event, while the strings at each pattern or
format location are collected and checked together: joined with a separator no value can
contain, and matched by one RE2 program (linear time) that repeats the check's grammar.

A ``BatchCheck`` answers True only if every string passes the reference check (the same
matcher or format function fastjsonschema runs): when the joined match says no, each string
is checked on its own with the reference. Batched are only the checks whose grammar is
proven here to be the reference's or narrower:

- patterns that anchored.py proves backtracking-free (``^ atom* $``, no groups or
  alternation): the reference runs Python ``re`` with ``re.ASCII`` and ``\\Z``, on the same
  atom syntax RE2 reads the same way (anchored.py). The separator is a character outside
  every atom's set, so each value is matched by the body alone, start to end.
- ``date``, ``time``, ``date-time``: RFC 3339 as formats.py reads it, narrowed so no calendar
  or leap-second rule is needed (year 0000, February 29 and second 60 go to the reference).
- ``email``: formats.py's plain-address pattern for values of at most 64 characters (which
  bounds the local part and the domain), with no ``--`` after the ``@`` and no special-use
  top-level domain, exactly the conditions of ``_plain_email``.
- ``uuid``: its anchored pattern.

Everything else (other formats, other patterns) stays inline in the generated validator.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from re2 import _re2

from eventward._internal.schema import formats
from eventward._internal.schema.anchored import _atoms
from eventward._internal.schema.regex import Matcher, _options

_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_NO_MATCH = (-1, -1)
_SEPARATORS = ("\x00", "\n", "\x01", "\x1f", "\x7f")

_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # datetime.MINYEAR is 1
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # days every month has
    "|(?:0[13-9]|1[0-2])-(?:29|30)"  # every month but February
    "|(?:0[13578]|1[02])-31)"
)
_DATE = f"{_YEAR}-{_MONTH_DAY}"
_TIME = (
    "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?"  # no second 60
    "(?:[Zz]|[+\\-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_EMAIL = formats._PLAIN_EMAIL.pattern.removesuffix("\\Z")
# A special-use top-level label: a "." then the name then the end of the value (the grammar
# above is ASCII, so the case-insensitive match is the ``.lower()`` of formats.py).
_SPECIAL_TLD = "(?i:\\.(?:" + "|".join(sorted(re.escape(d) for d in formats._SPECIAL_USE)) + "))\\x00"


class BatchCheck:
    """``check(values)`` is True only if ``one(v)`` is true for every string ``v``."""

    __slots__ = ("_bad", "_max_len", "_one", "_rx", "_sep")

    def __init__(
        self, body: str, sep: str, one: Callable[[str], object], *, max_len: int | None = None, bad: str | None = None
    ) -> None:
        self._sep = sep
        self._one = one
        self._max_len = max_len
        self._rx = _program(f"(?:(?:{body})\\x{ord(sep):02x})*")
        self._bad = None if bad is None else _program(bad)

    def __call__(self, values: list[str]) -> bool:
        return not values or self._joined(values) or all(map(self._one, values))

    def _joined(self, values: list[str]) -> bool:
        """One RE2 match over all values (a sufficient condition, never a necessary one)."""
        if self._max_len is not None and max(map(len, values), default=0) > self._max_len:
            return False
        sep = self._sep
        joined = sep.join(values) + sep
        if joined.count(sep) != len(values):  # a value holding the separator would be split in two
            return False
        try:
            b = joined.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (orjson refuses those before this runs)
            return False
        if self._rx.Match(_BOTH, b, 0, len(b))[0] == _NO_MATCH:
            return False
        return self._bad is None or self._bad.Match(_UNANCHORED, b, 0, len(b))[0] == _NO_MATCH


def _program(pattern: str) -> _re2.RE2:
    rx = _re2.RE2(pattern.encode("utf-8"), _options())
    if not rx.ok():
        raise ValueError("batch pattern does not compile")
    return rx


def pattern_batch(pattern: str, matcher: Matcher) -> BatchCheck | None:
    """A batch check for a schema ``pattern`` whose reference matcher is anchored.py's Python
    pattern, else None (RE2 matchers and unproven patterns stay per value)."""
    if not isinstance(matcher, re.Pattern) or pattern[:1] != "^" or pattern[-1:] != "$":
        return None
    return _anchored_batch(pattern[1:-1], matcher.search)


def _anchored_batch(body: str, one: Callable[[str], object]) -> BatchCheck | None:
    """``body`` is the inside of ``^...$``, in anchored.py's atom syntax or not batched."""
    atoms = _atoms(body)
    if atoms is None:
        return None
    sep = next((c for c in _SEPARATORS if not any(lo <= ord(c) <= hi for r, _, _ in atoms for lo, hi in r)), None)
    if sep is None:
        return None
    try:
        return BatchCheck(body, sep, one)
    except ValueError:  # e.g. RE2's program memory limit: the pattern stays per value
        return None


def format_batch(name: str) -> BatchCheck | None:
    """A batch check for a ``format``, or None for the formats checked per value."""
    one = formats.FORMATS.get(name)
    if one is None:
        return None
    if name == "date-time":
        return BatchCheck(f"{_DATE}[Tt]{_TIME}", "\x00", one)
    if name == "date":
        return BatchCheck(_DATE, "\x00", one)
    if name == "time":
        return BatchCheck(_TIME, "\x00", one)
    uuid = formats._UUID
    if name == "uuid" and isinstance(uuid, re.Pattern) and uuid.pattern[:1] == "^" and uuid.pattern[-2:] == "\\Z":
        return _anchored_batch(uuid.pattern[1:-2], one)
    if name == "email" and not formats._SPECIAL_USE_MULTI:
        # The last "." of a plain address starts its top-level label; "--" may not follow the "@".
        return BatchCheck(_EMAIL, "\x00", one, max_len=64, bad=f"{_SPECIAL_TLD}|@[^\\x00]*--")
    return None
