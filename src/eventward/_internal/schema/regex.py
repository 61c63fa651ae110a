"""Regular expressions from schemas: admitted only if linear-time, and matched in linear time.

RE2 guarantees linear-time matching, so a schema pattern can never hang a producer, a
consumer or the registry. Registration refuses what RE2 cannot run (backreferences,
lookarounds) and, as defence in depth for clients in other languages that validate the
same schema with a backtracking engine, nested unbounded quantifiers such as ``(a+)+``.
Patterns must also compile under Python ``re``, which the validator generator parses once
at registration. Matching runs on RE2 (``LinearRegex``), except for the simple anchored
patterns anchored.py proves backtracking-free, which run on Python ``re`` (faster per call).
"""

from __future__ import annotations

import re
from typing import Protocol

import re2
from re2 import _re2

from eventward._internal.schema.anchored import anchored
from eventward.errors import SchemaSecurityError

MAX_PATTERN_CHARS = 1000
_MAX_MEM = 8 << 20  # bytes of RE2 program memory per pattern
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


class Matcher(Protocol):
    """What the validator calls: is there a match in ``text`` (truthy), JSON Schema semantics."""

    def search(self, text: str) -> object: ...


def _options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # RE2 would print the pattern to stderr
    opts.never_capture = True
    opts.max_mem = _MAX_MEM
    return opts


class LinearRegex:
    """A compiled RE2 program with the one method the validator calls: ``search``.

    Calls the RE2 core directly: the pure-Python match objects of the ``re2`` wrapper cost
    about 4 µs per call, which would dominate validation.
    """

    __slots__ = ("_rx", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._rx = _re2.RE2(pattern.encode("utf-8"), _options())
        if not self._rx.ok():
            raise SchemaSecurityError(f"pattern {_show(pattern)} is not supported by RE2")

    def search(self, text: str) -> bool:
        b = text.encode("utf-8", "surrogatepass")
        return self._rx.Match(_UNANCHORED, b, 0, len(b))[0] != _NO_MATCH

    def __repr__(self) -> str:
        return f"LinearRegex({_show(self.pattern)})"


def _show(pattern: str) -> str:
    return repr(pattern[:80] + ("..." if len(pattern) > 80 else ""))


def compile_pattern(pattern: object, where: str) -> Matcher:
    """Admit a schema pattern (naming ``where`` in the refusal) and compile a linear-time matcher."""
    if not isinstance(pattern, str):
        raise SchemaSecurityError(f"{where}: pattern must be a string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SchemaSecurityError(f"{where}: pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        rx = LinearRegex(pattern)
    except SchemaSecurityError:
        raise SchemaSecurityError(
            f"{where}: pattern {_show(pattern)} needs backtracking (backreference or lookaround) "
            "or is not valid RE2 syntax"
        ) from None
    nested = nested_quantifier(pattern)
    if nested is not None:
        raise SchemaSecurityError(
            f"{where}: pattern {_show(pattern)} repeats a repeated group at offset {nested} "
            "(catastrophic backtracking in non-RE2 validators)"
        )
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        raise SchemaSecurityError(
            f"{where}: pattern {_show(pattern)} is not valid in Python regex syntax"
        ) from None
    return anchored(pattern) or rx


def nested_quantifier(pattern: str) -> int | None:
    """Offset of a repeated group that itself contains an unbounded repeat, else None.

    A linear scan tracking, per open group, whether it contains ``*``, ``+`` or ``{n,}``;
    character classes and escapes are skipped. Conservative: ``(ab+)*`` is refused too,
    ``(?:-[a-z]{2,8})*`` is admitted.
    """
    starts: list[int] = []  # offsets of open groups
    unbounded: list[bool] = []  # per open group: contains an unbounded repeat
    closed: tuple[int, bool] | None = None  # the group that just closed, if the last token was one
    i, n = 0, len(pattern)
    while i < n:
        q = _quantifier(pattern, i)
        if q is not None:
            end, is_unbounded = q
            if closed is not None and closed[1]:
                return closed[0]
            if is_unbounded and unbounded:
                unbounded[-1] = True
            closed, i = None, end
            continue
        closed = None
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _skip_class(pattern, i)
            continue
        if c == "(":
            starts.append(i)
            unbounded.append(False)
        elif c == ")" and starts:
            closed = (starts.pop(), unbounded.pop())
            if closed[1] and unbounded:
                unbounded[-1] = True
        i += 1
    return None


def _quantifier(p: str, i: int) -> tuple[int, bool] | None:
    """(end offset, unbounded) of a quantifier at ``i`` that repeats more than once, else None."""
    c = p[i]
    if c in "*+":
        j, is_unbounded = i + 1, True
    elif c == "{":
        m = _BRACES.match(p, i)
        if m is None:
            return None
        lo, comma, hi = m.groups()
        if (not comma and int(lo or "0") <= 1) or (comma and hi and int(hi) <= 1):
            return None
        j, is_unbounded = m.end(), bool(comma) and not hi
    else:
        return None
    if j < len(p) and p[j] in "?+":  # lazy / possessive modifiers
        j += 1
    return j, is_unbounded


_BRACES = re.compile(r"\{(\d{0,6})(,?)(\d{0,6})\}")


def _skip_class(p: str, i: int) -> int:
    j = i + 1
    if j < len(p) and p[j] == "^":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1
    while j < len(p) and p[j] != "]":
        j += 2 if p[j] == "\\" else 1
    return j + 1
