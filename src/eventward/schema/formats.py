"""The ``format`` values a schema may use, each checked in linear time.

fastjsonschema's built-in format checks run Python ``re`` patterns, some with polynomial
backtracking on crafted input (its email pattern, for one); these replace them. Each is an
anchored pattern that anchored.py proves backtracking-free, or a fixed pattern whose only
choices are between alternatives of fixed length with distinct first characters or a
bounded optional fraction followed by a disjoint character (so any backtracking is constant
work), or plain code. Every one returns a truthy value for a valid string. Unknown format
names are refused at registration rather than silently ignored: a typo must not turn a
check off.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from eventward.schema.anchored import anchored
from eventward.schema.regex import LinearRegex, Matcher

_SPACE = " \t\n\r\f\v"
_DATE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d{1,9})?(?:[Zz]|[+\-](?:[01]\d|2[0-3]):[0-5]\d)"


def _linear(pattern: str) -> Matcher:
    return anchored(pattern) or LinearRegex(pattern)


def _fixed(pattern: str) -> Callable[[str], object]:
    """A reviewed library pattern (see the module docstring), matched whole by Python ``re``."""
    return re.compile(pattern + r"\Z", re.ASCII).match


_EMAIL = _linear(f"^[^@{_SPACE}]{{1,64}}@[^@{_SPACE}]{{1,255}}$")
_UUID = _linear(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_LABEL = _linear(r"^[A-Za-z0-9][A-Za-z0-9\-]{0,62}$")
_URI = _linear(f"^[A-Za-z][A-Za-z0-9+.\\-]{{0,31}}:[^{_SPACE}]*$")


def _hostname(v: str) -> bool:
    if len(v) > 253:
        return False
    labels = v[:-1].split(".") if v.endswith(".") else v.split(".")
    return all(_LABEL.search(label) and not label.endswith("-") for label in labels)


def _ip(version: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        if len(value) > 45:
            return False
        try:
            return ipaddress.ip_address(value).version == version
        except ValueError:
            return False

    return check


def _uri(v: str) -> object:
    return len(v) <= 8192 and _URI.search(v)


FORMATS: dict[str, Callable[[str], object]] = {
    "date-time": _fixed(f"{_DATE}[Tt ]{_TIME}"),
    "date": _fixed(_DATE),
    "time": _fixed(_TIME),
    "email": _EMAIL.search,
    "uuid": _UUID.search,
    "ipv4": _ip(4),
    "ipv6": _ip(6),
    "hostname": _hostname,
    "uri": _uri,
}
