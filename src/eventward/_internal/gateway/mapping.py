"""mTLS principal mapping with Kafka's ``ssl.principal.mapping.rules`` syntax and semantics.

A rule list is ``RULE:pattern/replacement/[LU]`` and ``DEFAULT`` entries separated by commas
(commas inside a rule's pattern or replacement are fine: the splitter is Kafka's own grammar).
Rules are tried in order against the subject DN string; the first whose pattern matches the
*whole* DN wins, and the principal is the DN with every match replaced (Java ``replaceAll``)
by the replacement, where ``$n`` is a group reference and ``\\x`` a literal ``x``. ``/L`` and
``/U`` lower/upper-case the result. ``DEFAULT`` maps to the full DN. No matching rule: refused.

The DN string is ``cryptography``'s ``Name.rfc4514_string()``. RFC 4514 (like RFC 2253,
which Java's ``X500Principal.getName()`` follows) writes RDNs in *reverse* ASN.1 order, so a
certificate issued as ``C=US, O=Acme, OU=services, CN=orders`` reads
``CN=orders,OU=services,O=Acme,C=US`` here exactly as in Kafka, and Kafka rules carry over.
One difference: attributes without an RFC 4514 keyword (e.g. emailAddress) appear as
``<dotted OID>=<string value>`` rather than Java's ``<OID>=#<hex BER>``.

Patterns come from configuration, so they are compiled with RE2 (linear time, no
backtracking): a hostile or careless pattern cannot stall the TLS accept path. RE2 has no
backreferences or lookaround; such patterns are refused at startup with a ConfigError.

Deliberate deviations from Kafka, all failing early instead of at the first connection:
a replacement with ``$`` not followed by a digit, a trailing ``\\``, or ``$n`` in a pattern
without groups is a ConfigError; ``$n`` beyond the group count is literal text (Kafka's
intent, without its index-shifting bug); a rule mapping to an empty principal refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

from eventward._internal.config import DEFAULT_PRINCIPAL_RULES
from eventward.errors import AuthenticationError, ConfigError

# Kafka's rule grammar (SslPrincipalMapper.RULE_PATTERN). This is a fixed, trusted pattern over
# operator configuration, and its alternatives are disjoint, so Python's engine is safe here.
_RULE = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(,\s*|$)")
_PARSER = re.compile(_RULE)
_MAX_RULES_CHARS = 16 * 1024
_MAX_PATTERN_MEM = 1 << 20
MAX_PRINCIPAL_CHARS = 256

# Safe out of the box: a plain CN first in the subject (see eventward._internal.config, where the gateway
# settings default to it).
DEFAULT_RULES = DEFAULT_PRINCIPAL_RULES


@dataclass(frozen=True)
class _Piece:
    """One element of a parsed replacement: literal text, or a group reference."""

    text: str = ""
    group: int | None = None


@dataclass(frozen=True)
class Rule:
    source: str
    pattern: object | None = None  # compiled RE2 pattern; None for DEFAULT
    replacement: tuple[_Piece, ...] = ()
    case: str = ""  # "", "L" or "U"

    @property
    def is_default(self) -> bool:
        return self.pattern is None

    def apply(self, dn: str) -> str | None:
        """The principal this rule maps ``dn`` to, or None if the rule does not match."""
        if self.pattern is None:
            return dn
        pat = self.pattern
        if pat.fullmatch(dn) is None:  # type: ignore[attr-defined]
            return None
        out = _replace_all(pat, dn, self.replacement)
        if self.case == "L":
            out = out.lower()
        elif self.case == "U":
            out = out.upper()
        return out

    def __str__(self) -> str:
        return self.source


def _replace_all(pat: object, text: str, repl: tuple[_Piece, ...]) -> str:
    """Java ``String.replaceAll``: every leftmost-first match, the next search starting after the
    previous match (one character further after an empty match)."""
    out: list[str] = []
    pos = last = 0
    while pos <= len(text):
        m = pat.search(text, pos)  # type: ignore[attr-defined]
        if m is None:
            break
        start, end = m.span()
        out.append(text[last:start])
        for piece in repl:
            out.append(piece.text if piece.group is None else (m.group(piece.group) or ""))
        last = end
        pos = end + 1 if end == start else end
    out.append(text[last:])
    return "".join(out)


def _parse_replacement(raw: str, groups: int, rule: str) -> tuple[_Piece, ...]:
    """Java's ``Matcher.appendReplacement`` grammar, checked up front."""
    pieces: list[_Piece] = []
    lit: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if i + 1 >= len(raw):
                raise ConfigError(f"principal mapping rule {rule!r}: replacement ends with a lone '\\'")
            lit.append(raw[i + 1])
            i += 2
            continue
        if c != "$":
            lit.append(c)
            i += 1
            continue
        j = i + 1
        if j >= len(raw) or not raw[j].isdigit() or not raw[j].isascii():
            raise ConfigError(f"principal mapping rule {rule!r}: '$' must be followed by a group number")
        if raw[j] != "0":
            if groups == 0:
                raise ConfigError(
                    f"principal mapping rule {rule!r}: '${raw[j]}' but the pattern has no groups"
                )
            # Kafka escapes a reference beyond the group count so it stays literal text ...
            digits = j
            while digits < len(raw) and raw[digits].isascii() and raw[digits].isdigit():
                digits += 1
            number = int(raw[j:digits])
            while number > groups and number >= 10:
                number //= 10
            if number > groups:
                lit.append("$")
                i += 1
                continue
        # ... and Java then reads the longest group number that exists.
        ref = int(raw[j])
        k = j + 1
        while k < len(raw) and raw[k].isascii() and raw[k].isdigit() and ref * 10 + int(raw[k]) <= groups:
            ref = ref * 10 + int(raw[k])
            k += 1
        if lit:
            pieces.append(_Piece("".join(lit)))
            lit = []
        pieces.append(_Piece(group=ref))
        i = k
    if lit:
        pieces.append(_Piece("".join(lit)))
    return tuple(pieces)


def _compile(pattern: str, rule: str) -> object:
    opts = re2.Options()
    opts.log_errors = False
    opts.max_mem = _MAX_PATTERN_MEM
    try:
        return re2.compile(pattern, opts)
    except re2.error:
        raise ConfigError(
            f"principal mapping rule {rule!r}: pattern is not valid RE2 syntax "
            "(no backreferences or lookaround)"
        ) from None


def split_rules(rules: str) -> list[str]:
    """Kafka's splitter: the raw rule strings, empty ones included."""
    if len(rules) > _MAX_RULES_CHARS:
        raise ConfigError(f"principal mapping rules are longer than {_MAX_RULES_CHARS} characters")
    return [m.group(1) for m in _SPLITTER.finditer(rules.strip())]


def parse_rules(rules: str) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for raw in split_rules(rules):
        m = _PARSER.match(raw)
        if m is None or m.end() != len(raw):
            raise ConfigError(f"invalid principal mapping rule {raw!r}")
        if m.group(1) is not None:
            out.append(Rule("DEFAULT"))
        elif m.group(2) is not None:
            pattern, replacement, case = m.group(2), m.group(4), m.group(6)
            compiled = _compile(pattern, raw)
            pieces = _parse_replacement(replacement, compiled.groups, raw)  # type: ignore[attr-defined]
            out.append(Rule(raw, compiled, pieces, case))
        # an empty rule is ignored, as in Kafka
    return tuple(out)


class PrincipalMapper:
    """Maps a verified certificate's subject DN to a principal name."""

    def __init__(self, rules: str = DEFAULT_RULES) -> None:
        self.rules = parse_rules(rules)

    def map(self, dn: str) -> str:
        for rule in self.rules:
            name = rule.apply(dn)
            if name is None:
                continue
            if not name or len(name) > MAX_PRINCIPAL_CHARS or not name.isprintable():
                # The DN itself is not echoed: it can carry personal names.
                raise AuthenticationError(
                    "certificate subject maps to an unusable principal name", reason="bad_principal"
                )
            return name
        raise AuthenticationError(
            "certificate subject matches no principal mapping rule", reason="unmapped_subject"
        )

    def __repr__(self) -> str:
        return f"PrincipalMapper({', '.join(map(str, self.rules))})"
