"""Detectors for PII and secrets in event values: a candidate pattern on RE2, then a validator.

Patterns only find candidates; a kind is reported when the candidate passes the validator of a
well-kept library where one exists: IBANs and national ids with check digits (python-stdnum),
card numbers (Luhn via stdnum.luhn, plus the card networks' number ranges), phone numbers
(phonenumbers, full validation against the numbering plan), emails (RFC 5321 limits),
IP addresses (ipaddress), JWTs (detect-secrets' format check). Cloud and API keys, private keys
and passwords in URLs are detect-secrets' plugins: we take each plugin's own patterns and run
them on RE2; a plugin whose patterns need backtracking (lookarounds) is not loaded.

Every pattern, ours and the plugins', runs on RE2, in time linear in the input: a value built
to make a backtracking engine explode costs the same as any other value of its length. A
custom pattern that RE2 cannot run is refused (``compile_detector_pattern``).

Names of people in free text are not detected: no NER model installs from PyPI in the
README's set-up (spaCy's models are not on the registry), so this module does not pretend.

Hot path: a few RE2 Set matches per value say which detectors' patterns occur at all (for most
values none); only those detectors look further. The patterns are split over four Sets
(``Detector.prefilter``: email, digit-based ids, IP addresses, secrets), and a Set is skipped
for a value without a character all its patterns need (``Detector.needs``: ``@``, a digit).
In one Set, the patterns' counted runs multiplied each other's DFA states: a random
48-character token cost 150 us, 500 random characters 0.6-1.7 ms (the DFA cache thrashing);
split, 10 us and under 0.1 ms, for 1-3 us more on a typical id. A value longer than
``SHORT_BYTES`` is matched one pattern at a time: linear with a small constant, whatever the text.
"""

from __future__ import annotations

import ipaddress
import re  # only for detect-secrets' flag constants: no pattern runs on `re`
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import re2
from re2 import _re2

from eventward.errors import SchemaSecurityError

# --- kinds ----------------------------------------------------------------------------------

EMAIL = "email"
PHONE = "phone"
CARD = "card_number"
IBAN = "iban"
NATIONAL_ID = "national_id"  # check-digit ids: ES DNI/NIE, IT codice fiscale, FR NIR, DE IdNr
SSN = "us_ssn"  # format and range rules only (no check digit)
IP = "ip_address"
AWS_KEY = "aws_access_key"
JWT = "jwt"
PRIVATE_KEY = "private_key"
URL_PASSWORD = "url_password"  # noqa: S105 - a kind name
API_TOKEN = "api_token"  # noqa: S105 - a kind name

#: Kinds whose validator is a checksum: the corpus test holds them to recall >= 0.99.
CHECKSUM_KINDS = frozenset({CARD, IBAN, NATIONAL_ID})
SECRET_KINDS = frozenset({AWS_KEY, JWT, PRIVATE_KEY, URL_PASSWORD, API_TOKEN})
#: The sensitivity class a suggested tag gets for each kind.
CLASS_OF = {
    EMAIL: "pii", PHONE: "pii", SSN: "pii", NATIONAL_ID: "pii", IP: "pii",
    CARD: "payment", IBAN: "payment",
    **dict.fromkeys(SECRET_KINDS, "secret"),
}

MAX_SCAN_CHARS = 1 << 20  # an event is at most 1 MiB; longer text is cut, never scanned slowly
MIN_SCAN_CHARS = 6  # the shortest value any detector can confirm: an e-mail such as a@b.co
SHORT_BYTES = 512  # longer values (and joined pre-checks) go through one Set per pattern
_MAX_MEM = 16 << 20
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED


def _options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # RE2 would print the pattern (and so our input) to stderr
    opts.max_mem = _MAX_MEM
    return opts


def compile_detector_pattern(pattern: str) -> re2._Regexp:
    """A pattern for a detector, compiled on RE2 (linear time) or refused with a typed error.

    RE2 has no backreferences or lookarounds, so a pattern that would need backtracking
    cannot be loaded at all: a detector cannot be turned into a ReDoS.
    """
    if not isinstance(pattern, str) or not pattern or len(pattern) > 2000:
        raise SchemaSecurityError("a detector pattern must be a string of 1..2000 characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error:
        raise SchemaSecurityError(
            f"detector pattern {pattern[:60]!r} is not supported by RE2 (backreference, lookaround "
            "or too large): it could not be matched in linear time"
        ) from None


def _compile_set(detectors: list[Detector]) -> _re2.Set:
    """One unanchored RE2 Set of the detectors' patterns (their index in the Set: their order)."""
    rx_set = _re2.Set(_UNANCHORED, _options())
    for d in detectors:
        if rx_set.Add(d.pattern.encode()) < 0:
            raise SchemaSecurityError("a detector pattern is not supported by RE2")
    if not rx_set.Compile():
        raise SchemaSecurityError("the detectors' patterns do not fit RE2's memory budget")
    return rx_set


# --- validators -----------------------------------------------------------------------------


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _card(candidate: str) -> bool:
    from stdnum import luhn

    d = _digits(candidate)
    if not 13 <= len(d) <= 19:
        return False
    # The networks' number ranges (IIN) with their lengths: random digit strings (order ids,
    # timestamps) pass Luhn one time in ten; these cut that to a handful of ranges.
    two, four = int(d[:2]), int(d[:4])
    ok = (
        (d[0] == "4" and len(d) in (13, 16, 19))  # Visa
        or (51 <= two <= 55 and len(d) == 16) or (2221 <= four <= 2720 and len(d) == 16)  # Mastercard
        or (two in (34, 37) and len(d) == 15)  # Amex
        or ((four == 6011 or two == 65 or 644 <= int(d[:3]) <= 649) and len(d) in (16, 19))  # Discover
        or (3528 <= four <= 3589 and len(d) in (16, 19))  # JCB
        or (two in (36, 38, 39) and len(d) in (14, 16)) or (300 <= int(d[:3]) <= 305 and len(d) == 14)  # Diners
    )
    return ok and luhn.is_valid(d)


def _iban(candidate: str) -> bool:
    from stdnum import iban

    return iban.is_valid(candidate)


def _national_id(candidate: str) -> bool:
    from stdnum.de import idnr
    from stdnum.es import dni, nie
    from stdnum.fr import nir
    from stdnum.it import codicefiscale

    c = candidate.strip()
    compact = c.replace(" ", "").replace("-", "")
    if len(compact) == 9:
        return dni.is_valid(compact) or nie.is_valid(compact)
    if len(compact) == 16:
        return codicefiscale.is_valid(compact)
    if len(compact) == 15:
        return nir.is_valid(compact)
    if len(compact) == 11 and compact.isdigit():
        return idnr.is_valid(compact)
    return False


def _ssn(candidate: str) -> bool:
    from stdnum.us import ssn

    return ssn.is_valid(candidate)


def _email(candidate: str) -> bool:
    """RFC 5321 limits on a candidate the pattern already shaped (dot-atom local part, DNS labels):
    email-validator would add about 0.5 ms per candidate for no better answer on event data."""
    local, _, domain = candidate.rpartition("@")
    if not 1 <= len(local) <= 64 or len(domain) > 253 or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    labels = domain.split(".")
    return all(0 < len(lb) <= 63 and lb[0] != "-" and lb[-1] != "-" for lb in labels) and labels[-1].isalpha()


def _phone(candidate: str) -> bool:
    import phonenumbers

    try:
        n = phonenumbers.parse(candidate, "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(n)


def _ip(candidate: str) -> bool:
    try:
        addr = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        return candidate.count(":") >= 2 and not addr.is_unspecified
    return True


def _jwt(candidate: str) -> bool:
    from detect_secrets.plugins.jwt import JwtTokenDetector

    return JwtTokenDetector.is_formally_valid(candidate)


def _always(candidate: str) -> bool:
    return True


# --- detectors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One kind: where its candidates are (an RE2 pattern) and how a candidate is confirmed."""

    kind: str
    pattern: str
    validate: Callable[[str], bool]
    source: str  # which library confirms it
    #: the pre-check Set the pattern joins: patterns whose counted runs blow up each other's DFA
    #: states in one Set are kept apart (speed only: every Set's matches are used)
    prefilter: str = ""
    #: ASCII characters one of which every match contains ("": none named): a Set whose
    #: patterns all name some is skipped for a value that has none of them
    needs: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rx", compile_detector_pattern(self.pattern))

    def find(self, text: str) -> bool:
        rx: re2._Regexp = self._rx  # type: ignore[attr-defined]
        return any(self.validate(m.group(0)) for m in rx.finditer(text))


_DIGITS = "0123456789"  # RE2's \d is ASCII: a pattern with a \d in each alternative needs one of these
_B = r"(?:^|[^A-Za-z0-9_])"  # a boundary RE2 can do without lookbehind (the char is part of the match)

OURS: tuple[Detector, ...] = (
    Detector(EMAIL, r"[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}",
             _email, "RFC 5321 limits", "email", "@"),
    Detector(CARD, r"\b[2-6]\d{3}(?:[ -]?\d){9,15}\b", _card, "stdnum.luhn + IIN ranges", "digits", _DIGITS),
    Detector(IBAN, r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", _iban, "stdnum.iban", "digits", _DIGITS),
    Detector(NATIONAL_ID,
             r"\b(?:[0-9XYZ]\d{7}[A-Z]|[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]|[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB])"
             r" ?\d{3} ?\d{3} ?\d{2}|\d{2} ?\d{3} ?\d{3} ?\d{3})\b",
             _national_id, "stdnum es.dni/nie, it.codicefiscale, fr.nir, de.idnr", "digits", _DIGITS),
    Detector(SSN, r"\b\d{3}-\d{2}-\d{4}\b", _ssn, "stdnum.us.ssn", "digits", _DIGITS),
    Detector(PHONE,
             # national (NANP: area and exchange start 2-9) or international (+ country code)
             r"(?:\(\s?[2-9]\d{2}\s?\)|\b[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]?\d{4}\b|\+\d{1,3}(?:[ .-]?\d{1,5}){2,5}\b",
             _phone, "phonenumbers", "digits", _DIGITS),
    # IPv6 has 7 colons or a "::" (so a time of day, hh:mm:ss, is no candidate)
    Detector(IP, r"\b\d{1,3}(?:\.\d{1,3}){3}\b|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){0,6}::[0-9A-Fa-f:.]{0,39}"
                 r"|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}", _ip, "ipaddress", "ip", _DIGITS + ":"),
)


def _plugin_detectors() -> tuple[Detector, ...]:
    """detect-secrets' plugins, their patterns compiled on RE2 (flags carried over)."""
    from detect_secrets.plugins import (
        aws,
        azure_storage_key,
        basic_auth,
        github_token,
        gitlab_token,
        jwt,
        mailchimp,
        npm,
        openai,
        private_key,
        pypi_token,
        sendgrid,
        slack,
        square_oauth,
        stripe,
        telegram_token,
    )

    plugins: list[tuple[str, type, Callable[[str], bool]]] = [
        (AWS_KEY, aws.AWSKeyDetector, _always),
        (JWT, jwt.JwtTokenDetector, _jwt),
        (PRIVATE_KEY, private_key.PrivateKeyDetector, _always),
        (URL_PASSWORD, basic_auth.BasicAuthDetector, _always),
    ] + [
        (API_TOKEN, p, _always)
        for p in (
            github_token.GitHubTokenDetector, gitlab_token.GitLabTokenDetector, slack.SlackDetector,
            stripe.StripeDetector, openai.OpenAIDetector, sendgrid.SendGridDetector, npm.NpmDetector,
            pypi_token.PypiTokenDetector, mailchimp.MailchimpDetector, square_oauth.SquareOAuthDetector,
            telegram_token.TelegramBotTokenDetector, azure_storage_key.AzureStorageKeyDetector,
        )
    ]
    out = []
    for kind, plugin, check in plugins:
        for rx in plugin.denylist:
            pattern = rx.pattern if isinstance(rx.pattern, str) else rx.pattern.decode()
            if rx.flags & re.VERBOSE:
                pattern = "".join(pattern.split())
            if rx.flags & re.IGNORECASE:
                pattern = f"(?i:{pattern})"
            try:
                out.append(Detector(kind, pattern, check, f"detect-secrets {plugin.__name__}"))
            except SchemaSecurityError:
                continue  # needs backtracking (e.g. GitLab's lookaheads): not loaded, never run on `re`
    return tuple(out)


class Detectors:
    """A set of detectors: ``kinds(text)`` is the API.

    A few RE2 Set matches per value say which detectors' patterns occur (most values: none);
    only those run their own pattern and validator. Values found clean twice are remembered in a
    bounded set (SKUs, names and statuses repeat); values with a finding never are. Values seen
    clean once wait in a second bounded set: unique ids (one per event) would otherwise fill the
    memo, evicting what repeats, and make every look-up a cache miss.
    """

    def __init__(self, detectors: tuple[Detector, ...], *, memo: int = 32768) -> None:
        self.detectors = detectors
        self.clean: set[str] = set()  # values found clean twice (bounded; never a value with a finding)
        self._once: set[str] = set()  # values found clean once
        self._memo = memo
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(detectors):
            groups.setdefault(d.prefilter, []).append(i)
        #: (Set, global index of each of its patterns, characters a value needs for any of them
        #: to match or "" for no such test), for values up to SHORT_BYTES
        self._sets = tuple(
            (
                _compile_set([detectors[i] for i in idx]),
                tuple(idx),
                "".join(sorted({c for i in idx for c in detectors[i].needs})).encode("ascii")
                if all(detectors[i].needs and detectors[i].needs.isascii() for i in idx) else b"",
            )
            for idx in groups.values()
        )
        self._singles: tuple[_re2.Set, ...] | None = None  # one per pattern, for longer values

    def candidates(self, text: str) -> list[int]:
        """Indexes of the detectors whose pattern occurs in ``text`` (linear RE2 passes)."""
        b = text.encode("utf-8", "surrogatepass")
        if len(b) > SHORT_BYTES:
            singles = self._singles
            if singles is None:
                singles = self._singles = tuple(_compile_set([d]) for d in self.detectors)
            return [i for i, one in enumerate(singles) if one.Match(b)]
        out: list[int] = []
        for rx_set, index, needs in self._sets:
            if needs and len(b.translate(None, needs)) == len(b):
                continue  # none of the characters every match of these patterns contains
            hits = rx_set.Match(b)
            if hits:
                out += [index[j] for j in hits]
        return out

    def kinds(self, text: str, only: list[int] | None = None) -> set[str]:
        """Every kind whose validator confirms a candidate in ``text`` (empty for most values).

        ``only``: the detectors a joint pre-check found anywhere in the event (``kinds_many``)."""
        if len(text) > MAX_SCAN_CHARS:
            text = text[:MAX_SCAN_CHARS]
        if len(text) < MIN_SCAN_CHARS or text in self.clean:
            return set()
        found: set[str] = set()
        for i in self.candidates(text) if only is None else only:
            d = self.detectors[i]
            if d.kind not in found and d.find(text):
                found.add(d.kind)
        if not found and len(text) <= 256:
            self._remember(text)
        return found

    def _remember(self, text: str) -> None:
        """``text`` was found clean: a second time, it joins the memo."""
        once = self._once
        if text in once:
            if len(self.clean) >= self._memo:
                self.clean.clear()
            self.clean.add(text)
            return
        if len(once) >= self._memo:
            once.clear()
        once.add(text)

    def kinds_many(self, texts: list[str]) -> list[set[str]]:
        """``kinds`` of each text, with the texts joined by newlines (up to SHORT_BYTES at a time)
        for a joint pre-check first.

        A sound pre-check: a candidate inside one text is a candidate of the joined text (no
        pattern is anchored to the start or end of the text), so "no detector matches" there
        means none matches any of its texts (most events end here, for one pass instead of one
        per field). A match that only exists across a newline costs a per-text check that finds
        nothing."""
        if len(texts) == 1:
            return [self.kinds(texts[0])]
        out: list[set[str]] = [set() for _ in texts]
        chunk: list[int] = []
        size = 0
        for i, t in enumerate(texts):
            if len(t) > SHORT_BYTES // 2:
                out[i] = self.kinds(t)  # alone: a long value gets nothing from company
                continue
            if chunk and size + len(t) + 1 > SHORT_BYTES:
                self._joint(texts, chunk, out)
                chunk, size = [], 0
            chunk.append(i)
            size += len(t) + 1
        if chunk:
            self._joint(texts, chunk, out)
        return out

    def _joint(self, texts: list[str], chunk: list[int], out: list[set[str]]) -> None:
        if len(chunk) == 1:
            out[chunk[0]] = self.kinds(texts[chunk[0]])
            return
        if self.candidates("\n".join(texts[i] for i in chunk)):
            for i in chunk:
                out[i] = self.kinds(texts[i])  # a few Set matches each, then only real candidates
            return
        remember = self._remember
        for i in chunk:
            t = texts[i]
            if 7 <= len(t) <= 256:
                remember(t)

    def kinds_of(self, value: object) -> set[str]:
        """Strings, and integers long enough to be a card or phone number."""
        if type(value) is str:
            return self.kinds(value)
        if type(value) is int and abs(value) >= 10**8:
            return self.kinds(str(value))
        return set()

    def __iter__(self) -> Iterator[Detector]:
        return iter(self.detectors)


_default: Detectors | None = None


def default_detectors() -> Detectors:
    """Our detectors and detect-secrets' plugins, built once per process."""
    global _default
    if _default is None:
        _default = Detectors(OURS + _plugin_detectors())
    return _default
