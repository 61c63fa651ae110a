"""The ``format`` values a schema may use, each checked in linear time and to its standard.

fastjsonschema's built-in format checks run Python ``re`` patterns, some with polynomial
backtracking on crafted input (its email pattern, for one), and loose ones accept values the
standards refuse. These replace them:

- ``date``, ``time``, ``date-time``: RFC 3339 section 5.6 syntax (a fixed pattern whose only
  choices are between alternatives with distinct first characters, so any backtracking is
  constant work), then the calendar (``2021-02-29`` does not exist) and the leap-second rule
  (second 60 only at 23:59 UTC) with the standard library.
- ``email``: RFC 5321/5322 addresses by ``email-validator`` (syntax only, never DNS), quoted
  local parts and address literals included, as the JSON Schema test suite expects.
- ``hostname``: RFC 1123 labels; ``xn--`` labels must be valid IDNA 2008 A-labels (``idna``);
  other labels may not have ``--`` in positions 3 and 4 (RFC 5891 4.2.3.1).
- ``ipv4``, ``ipv6``: ``ipaddress`` on ASCII only; no IPv6 zone id (not part of an address).
- ``uri``: the RFC 3986 ``URI`` rule (absolute, scheme required) transcribed from its ABNF and
  matched by RE2 in linear time; an IP-literal host is checked by ``ipaddress``.
- ``uuid``: RFC 4122 text form.

Every check returns a truthy value for a valid string and never raises. Unknown format names
are refused at registration rather than silently ignored: a typo must not turn a check off.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable

import idna
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from eventward._internal.schema.anchored import anchored
from eventward._internal.schema.regex import LinearRegex, Matcher

MAX_EMAIL = 320  # RFC 3696 errata: 64 + 1 + 255
MAX_URI = 8192

_DATE = r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_TIME = (
    r"([01]\d|2[0-3]):([0-5]\d):([0-5]\d|60)(?:\.\d{1,9})?"
    r"(?:[Zz]|([+\-])([01]\d|2[0-3]):([0-5]\d))"
)
_DATE_RX = re.compile(_DATE + r"\Z", re.ASCII)
_TIME_RX = re.compile(_TIME + r"\Z", re.ASCII)
_DATE_TIME_RX = re.compile(_DATE + "[Tt]" + _TIME + r"\Z", re.ASCII)


def _linear(pattern: str) -> Matcher:
    return anchored(pattern) or LinearRegex(pattern)


def _date_exists(y: str, m: str, d: str) -> bool:
    try:
        datetime.date(int(y), int(m), int(d))
    except ValueError:
        return False
    return True


def _time_ok(h: str, mi: str, s: str, sign: str | None, oh: str | None, om: str | None) -> bool:
    """A leap second (60) is only valid at 23:59 UTC: RFC 3339 5.7 and its appendix D."""
    if s != "60":
        return True
    minutes = int(h) * 60 + int(mi)
    if sign is not None:
        offset = int(oh or 0) * 60 + int(om or 0)
        minutes += -offset if sign == "+" else offset
    return minutes % (24 * 60) == 23 * 60 + 59


def _date(v: str) -> bool:
    m = _DATE_RX.match(v)
    return m is not None and _date_exists(*m.groups())


def _time(v: str) -> bool:
    m = _TIME_RX.match(v)
    return m is not None and _time_ok(*m.groups())


def _date_time(v: str) -> bool:
    m = _DATE_TIME_RX.match(v)
    if m is None:
        return False
    y, mo, d, h, mi, s, sign, oh, om = m.groups()
    # Days 01..28 exist in every month of every year but 0000 (datetime's MINYEAR is 1): the
    # calendar is only consulted for the rest. Likewise the leap-second rule only for second 60.
    if (d > "28" or y == "0000") and not _date_exists(y, mo, d):
        return False
    return s != "60" or _time_ok(h, mi, s, sign, oh, om)


_SPECIAL_USE = frozenset(d.lower() for d in SPECIAL_USE_DOMAIN_NAMES)
_SPECIAL_USE_MULTI = tuple(d for d in _SPECIAL_USE if "." in d)
# An ASCII dot-atom local part at two or more LDH labels with an alphabetic top-level label.
# Linear on Python re: the local part's classes exclude "." and "@", and each label's variable
# part is bounded (61) and cannot hold the "." that must follow it.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\Z",
    re.ASCII,
)


def _plain_email(v: str) -> bool:
    """The common case, decided fast; everything it accepts email-validator accepts too (a
    differential property test checks this). Anything else goes to email-validator."""
    at = v.rfind("@")
    if not 1 <= at <= 64 or len(v) - at - 1 > 253 or v.find("--", at) >= 0 or not _PLAIN_EMAIL.match(v):
        return False
    # The pattern puts a "." in the domain, so the last "." of v starts its top-level label.
    if v[v.rfind(".") + 1 :].lower() in _SPECIAL_USE:
        return False
    if not _SPECIAL_USE_MULTI:  # email-validator's list has none today
        return True
    domain = v[at + 1 :].lower()
    return not any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE_MULTI)


def _email(v: str) -> bool:
    if len(v) > MAX_EMAIL:
        return False
    if _plain_email(v):
        return True
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


_LABEL = _linear(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?$")


def _label(label: str) -> bool:
    if not _LABEL.search(label):
        return False
    if label[2:4] != "--":
        return True
    if label[:4].lower() != "xn--":
        return False  # reserved for future IDNA prefixes (RFC 5891 4.2.3.1)
    try:
        idna.decode(label)  # a valid A-label decodes to a valid U-label
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return True


# Each label's variable part is bounded (61) and cannot contain the "." that must follow it,
# so a give-back fails at once: linear time on Python re.
_PLAIN_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?\Z",
    re.ASCII,
)


def _hostname(v: str) -> bool:
    if not 1 <= len(v) <= 253 or not v.isascii():
        return False
    if "--" not in v:  # no label can be an A-label or a reserved "??--" label
        return _PLAIN_HOSTNAME.match(v) is not None
    return _hostname_by_label(v)


def _hostname_by_label(v: str) -> bool:
    labels = v[:-1].split(".") if v.endswith(".") else v.split(".")
    return all(_label(label) for label in labels)


def _ip(version: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        if len(value) > 45 or not value.isascii() or "%" in value:
            return False
        try:
            return ipaddress.ip_address(value).version == version
        except ValueError:
            return False

    return check


# RFC 3986 section 3 and appendix A, as one RE2 program (linear time by construction).
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = f"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT_NZ = f"{_PCHAR}+"
_USERINFO = f"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_IP_LITERAL = r"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[" + _UNRESERVED + _SUB_DELIMS + r":]+)\]"
_REG_NAME = f"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_AUTHORITY = f"(?:{_USERINFO}@)?(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?"
_HIER = f"(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_SEGMENT_NZ}(?:/{_PCHAR}*)*)?|{_SEGMENT_NZ}(?:/{_PCHAR}*)*|)"
_URI = LinearRegex(f"^[A-Za-z][A-Za-z0-9+.\\-]*:{_HIER}(?:\\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?$")
_IPV6_LITERAL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/?#@]*@)?\[([0-9A-Fa-f:.]+)\]", re.ASCII)


def _uri(v: str) -> bool:
    if len(v) > MAX_URI or not v.isascii() or not _URI.search(v):
        return False
    m = _IPV6_LITERAL.match(v)  # the grammar admitted the brackets; the address must be IPv6
    if m is None:
        return True
    try:
        ipaddress.IPv6Address(m.group(1))
    except ValueError:
        return False
    return True


_UUID = _linear(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

FORMATS: dict[str, Callable[[str], object]] = {
    "date-time": _date_time,
    "date": _date,
    "time": _time,
    "email": _email,
    "uuid": _UUID.search,
    "ipv4": _ip(4),
    "ipv6": _ip(6),
    "hostname": _hostname,
    "uri": _uri,
}
