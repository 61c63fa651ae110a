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

Hot path: one RE2 Set match per value says which detectors' patterns occur at all (for most
values none); only those detectors look further.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rx", compile_detector_pattern(self.pattern))

    def find(self, text: str) -> bool:
        rx: re2._Regexp = self._rx  # type: ignore[attr-defined]
        return any(self.validate(m.group(0)) for m in rx.finditer(text))


_B = r"(?:^|[^A-Za-z0-9_])"  # a boundary RE2 can do without lookbehind (the char is part of the match)

OURS: tuple[Detector, ...] = (
    Detector(EMAIL, r"[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}",
             _email, "RFC 5321 limits"),
    Detector(CARD, r"\b[2-6]\d{3}(?:[ -]?\d){9,15}\b", _card, "stdnum.luhn + IIN ranges"),
    Detector(IBAN, r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", _iban, "stdnum.iban"),
    Detector(NATIONAL_ID,
             r"\b(?:[0-9XYZ]\d{7}[A-Z]|[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]|[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB])"
             r" ?\d{3} ?\d{3} ?\d{2}|\d{2} ?\d{3} ?\d{3} ?\d{3})\b",
             _national_id, "stdnum es.dni/nie, it.codicefiscale, fr.nir, de.idnr"),
    Detector(SSN, r"\b\d{3}-\d{2}-\d{4}\b", _ssn, "stdnum.us.ssn"),
    Detector(PHONE,
             # national (NANP: area and exchange start 2-9) or international (+ country code)
             r"(?:\(\s?[2-9]\d{2}\s?\)|\b[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]?\d{4}\b|\+\d{1,3}(?:[ .-]?\d{1,5}){2,5}\b",
             _phone, "phonenumbers"),
    # IPv6 has 7 colons or a "::" (so a time of day, hh:mm:ss, is no candidate)
    Detector(IP, r"\b\d{1,3}(?:\.\d{1,3}){3}\b|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){0,6}::[0-9A-Fa-f:.]{0,39}"
                 r"|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}", _ip, "ipaddress"),
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

    One RE2 Set match per value says which detectors' patterns occur (most values: none);
    only those run their own pattern and validator. Values found clean are remembered in a
    bounded set (ids, SKUs and statuses repeat); values with a finding never are.
    """

    def __init__(self, detectors: tuple[Detector, ...], *, memo: int = 32768) -> None:
        self.detectors = detectors
        self.clean: set[str] = set()  # values found clean (bounded; never a value with a finding)
        self._memo = memo
        self._set = _re2.Set(_UNANCHORED, _options())
        for d in detectors:
            if self._set.Add(d.pattern.encode()) < 0:
                raise SchemaSecurityError("a detector pattern is not supported by RE2")
        if not self._set.Compile():
            raise SchemaSecurityError("the detectors' patterns do not fit RE2's memory budget")

    def candidates(self, text: str) -> list[int]:
        """Indexes of the detectors whose pattern occurs in ``text`` (one linear RE2 pass)."""
        return self._set.Match(text.encode("utf-8", "surrogatepass"))

    def kinds(self, text: str, only: list[int] | None = None) -> set[str]:
        """Every kind whose validator confirms a candidate in ``text`` (empty for most values).

        ``only``: the detectors a joint pre-check found anywhere in the event (``kinds_many``)."""
        if len(text) > MAX_SCAN_CHARS:
            text = text[:MAX_SCAN_CHARS]
        if len(text) < 7 or text in self.clean:
            return set()
        found: set[str] = set()
        for i in self.candidates(text) if only is None else only:
            d = self.detectors[i]
            if d.kind not in found and d.find(text):
                found.add(d.kind)
        if not found and len(text) <= 256:
            if len(self.clean) >= self._memo:
                self.clean.clear()
            self.clean.add(text)
        return found

    def kinds_many(self, texts: list[str]) -> list[set[str]]:
        """``kinds`` of each text, with one RE2 pass over all of them joined by newlines first.

        A sound pre-check: a candidate inside one text is a candidate of the joined text, so
        "no detector matches" there means none matches any text (most events end here, for one
        call instead of one per field). A match that only exists across a newline costs a
        per-text check that finds nothing."""
        if len(texts) == 1:
            return [self.kinds(texts[0])]
        hits = self.candidates("\n".join(t[:MAX_SCAN_CHARS] for t in texts))
        if not hits:
            for t in texts:
                if len(t) <= 256:
                    if len(self.clean) >= self._memo:
                        self.clean.clear()
                    self.clean.add(t)
            return [set() for _ in texts]
        return [self.kinds(t) for t in texts]  # one Set match each, then only real candidates

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
