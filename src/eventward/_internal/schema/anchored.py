"""Patterns provably free of backtracking blow-up, matched with Python ``re`` for speed.

An RE2 call costs about 1 µs from Python, several times Python ``re`` on short strings;
with half a dozen patterns per event that is most of the validation time. Many schema
patterns are simple anchored sequences (``^SKU-[0-9]{4}$``) for which a backtracking
engine provably runs in linear time, so those run on ``re``; every other pattern stays on
RE2 (regex.py).

The proof: the pattern is ``^ atom* $`` with no groups, alternation or lazy/possessive
modifiers, each atom a character set (literal, escaped punctuation, ``\\d``, ``\\w``, ``.``
or a class) with an optional quantifier, and every variable-length atom's set is disjoint
from the sets of the atoms that may follow it (up to and including the first mandatory
one). Then whenever the engine gives back a character of such an atom, whatever must come
next fails on that very character, so each give-back costs O(atoms) and a match attempt
O(len x atoms). The final ``$`` becomes ``\\Z`` (Python's ``$`` also matches before a
trailing newline, RE2's does not) and ``re.ASCII`` makes ``\\d``/``\\w`` mean what RE2 means.
"""

from __future__ import annotations

import re

_MAX_CHAR = 0x10FFFF
_INF = -1
Ranges = list[tuple[int, int]]
_ESCAPES: dict[str, Ranges] = {"d": [(48, 57)], "w": [(48, 57), (65, 90), (95, 95), (97, 122)]}
_QUANT = re.compile(r"\{(\d{1,4})(?:(,)(\d{0,4}))?\}")
_META = frozenset("^$*+?(){}|]")


def anchored(pattern: str) -> re.Pattern[str] | None:
    """A compiled Python pattern if ``pattern`` is provably backtracking-free (module docstring),
    else None. Its ``search`` answers exactly what RE2's search of ``pattern`` answers."""
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$" or pattern.endswith("\\$"):
        return None
    body = pattern[1:-1]
    atoms = _atoms(body)
    if atoms is None:
        return None
    for i, (ranges, lo, hi) in enumerate(atoms):
        if lo == hi:
            continue
        for later, later_lo, _ in atoms[i + 1 :]:
            if _overlap(ranges, later):
                return None
            if later_lo >= 1:
                break
    return re.compile("^" + body + r"\Z", re.ASCII)


def _atoms(body: str) -> list[tuple[Ranges, int, int]] | None:
    atoms = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                return None
            ranges = _escape(body[i + 1])
            i += 2
        elif c == "[":
            parsed = _class(body, i)
            if parsed is None:
                return None
            ranges, i = parsed
        elif c == ".":
            ranges = [(0, 9), (11, _MAX_CHAR)]
            i += 1
        elif c in _META:
            return None
        else:
            ranges = [(ord(c), ord(c))]
            i += 1
        if ranges is None:
            return None
        quant = _quantifier(body, i)
        if quant is None:
            return None
        lo, hi, i = quant
        atoms.append((ranges, lo, hi))
    return atoms


def _escape(e: str) -> Ranges | None:
    if e in _ESCAPES:
        return _ESCAPES[e]
    if e.isascii() and not e.isalnum() and e.isprintable():
        return [(ord(e), ord(e))]
    return None  # \s, \b, \n, \D, \p{..}...: engines differ or it is not a set


def _quantifier(body: str, i: int) -> tuple[int, int, int] | None:
    """(min, max or _INF, next index); (1, 1, i) when there is none; None if unsupported."""
    if i >= len(body) or body[i] not in "*+?{":
        return 1, 1, i
    c = body[i]
    if c == "{":
        m = _QUANT.match(body, i)
        if m is None:
            return None
        lo = int(m.group(1))
        hi = lo if not m.group(2) else (int(m.group(3)) if m.group(3) else _INF)
        if hi != _INF and hi < lo:
            return None
        end = m.end()
    else:
        lo, hi = {"*": (0, _INF), "+": (1, _INF), "?": (0, 1)}[c]
        end = i + 1
    if end < len(body) and body[end] in "?+":
        return None  # lazy or possessive
    return lo, hi, end


def _class(body: str, i: int) -> tuple[Ranges, int] | None:
    j = i + 1
    negate = j < len(body) and body[j] == "^"
    j += negate
    if j < len(body) and body[j] == "]":
        return None  # a leading literal "]": engines disagree
    ranges: Ranges = []
    while j < len(body) and body[j] != "]":
        c = body[j]
        if c == "[" or body[j : j + 2] in ("--", "&&", "~~", "||"):
            return None  # nested sets / set operations: engines disagree
        if c == "\\":
            esc = _escape(body[j + 1]) if j + 1 < len(body) else None
            if esc is None:
                return None
            j += 2
            if len(esc) > 1 or (body[j - 1] in _ESCAPES):
                ranges += esc
                continue
            start = esc[0][0]
        else:
            start = ord(c)
            j += 1
        end = start
        if j + 1 < len(body) and body[j] == "-" and body[j + 1] != "]":
            if body[j + 1] in "\\[":
                return None
            end = ord(body[j + 1])
            if end < start:
                return None
            j += 2
        ranges.append((start, end))
    if j >= len(body):
        return None
    merged = _merge(ranges)
    return (_complement(merged) if negate else merged), j + 1


def _merge(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: Ranges) -> Ranges:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_CHAR:
        out.append((nxt, _MAX_CHAR))
    return out


def _overlap(a: Ranges, b: Ranges) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False
