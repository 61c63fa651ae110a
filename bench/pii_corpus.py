"""A labelled corpus for the PII and secrets detectors: planted values of each kind, alone or
inside free text, and realistic values that are not PII (order ids, SKUs, UUIDs, timestamps,
prices, hashes, notes). Generated from a seed, so the tests and the benchmark see the same data
and no real person's data is ever needed. Checksummed kinds get correct check digits."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import string
import uuid
from datetime import UTC, datetime, timedelta

from stdnum import iban, luhn
from stdnum.it import codicefiscale

from eventward._internal.guard import detectors as k

_WORDS = (
    "delivery", "please", "leave", "the", "parcel", "at", "back", "door", "ring", "twice", "fragile", "gift",
    "wrap", "thanks", "customer", "asked", "for", "invoice", "copy", "express", "shipping", "warehouse",
    "restock", "discount", "applied", "promo", "spring", "sale", "order", "status", "updated", "by",
    "support", "team", "return", "label", "printed", "size", "medium", "color", "blue", "quantity", "two",
)
_FIRST = ["ada", "grace", "alan", "linus", "barbara", "ken", "margaret", "dennis", "frances", "edsger"]
_DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "example.co.uk", "post.example.de"]
_AREAS = ["212", "415", "646", "312", "617", "202", "305", "206", "512", "303", "404", "713"]
_DNI = "TRWAGMYFPDXBNJZSQVHLCKE"


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def email(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)}.{rng.randrange(10**4)}@{rng.choice(_DOMAINS)}"


def phone(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice([
            f"+44 20 7946 {rng.randrange(10**4):04d}",
            f"+33 1 {rng.randrange(40, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}",
            f"+49 30 {rng.randrange(10**7, 10**8)}",
        ])
    ex = rng.randrange(200, 1000)
    while ex % 100 == 11:
        ex = rng.randrange(200, 1000)
    a, sub = rng.choice(_AREAS), rng.randrange(10**4)
    return rng.choice([f"({a}) {ex}-{sub:04d}", f"{a}-{ex}-{sub:04d}", f"+1 {a} {ex} {sub:04d}", f"{a}.{ex}.{sub:04d}"])


def card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                 ("6011", 16), ("65", 16), ("3530", 16)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    d = body + luhn.calc_check_digit(body)
    if rng.random() < 0.5:
        return d
    sep = rng.choice([" ", "-"])
    return sep.join(d[i : i + 4] for i in range(0, len(d), 4))


def iban_(rng: random.Random) -> str:
    country, bban = rng.choice([
        ("DE", "".join(rng.choice(string.digits) for _ in range(18))),
        ("GB", "NWBK" + "".join(rng.choice(string.digits) for _ in range(14))),
        ("NL", "ABNA" + "".join(rng.choice(string.digits) for _ in range(10))),
    ])
    number = country + iban.calc_check_digits(country + "00" + bban) + bban
    if rng.random() < 0.5:
        return number
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def national_id(rng: random.Random) -> str:
    which = rng.randrange(3)
    if which == 0:  # ES DNI
        n = rng.randrange(10**7, 10**8)
        return f"{n}{_DNI[n % 23]}"
    if which == 1:  # IT codice fiscale
        letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(6))
        base = (f"{letters}{rng.randrange(100):02d}{rng.choice('ABCDEHLMPRST')}{rng.randrange(1, 29):02d}"
                f"{rng.choice(string.ascii_uppercase)}{rng.randrange(1000):03d}")
        return base + codicefiscale.calc_check_digit(base)
    body = (f"{rng.choice('12')}{rng.randrange(100):02d}{rng.randrange(1, 13):02d}{rng.randrange(1, 96):02d}"
            f"{rng.randrange(1, 990):03d}{rng.randrange(1, 999):03d}")
    key = 97 - int(body) % 97
    return f"{body}{key:02d}"


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10**4):04d}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return str(ipaddress.IPv4Address(rng.randrange(1 << 24, 0xDF000000)))
    return str(ipaddress.IPv6Address(rng.getrandbits(128) | (0x2001 << 112)))


def aws_key(rng: random.Random) -> str:
    return "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))


def jwt_(rng: random.Random) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    sig = base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': str(rng.randrange(10**6)), 'iat': 1700000000})}.{sig}"


def private_key(rng: random.Random) -> str:
    head = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    body = base64.b64encode(rng.randbytes(96)).decode()
    return f"-----BEGIN {head}-----\n{body}\n-----END {head}-----"


def url_password(rng: random.Random) -> str:
    pw = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(12))
    return f"{rng.choice(['postgres', 'https', 'amqp', 'redis'])}://{rng.choice(_FIRST)}:{pw}@db{rng.randrange(9)}.internal:5432/app"


def api_token(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    return rng.choice([
        "ghp_" + "".join(rng.choice(alnum) for _ in range(36)),
        "sk_live_" + "".join(rng.choice(alnum) for _ in range(24)),
        f"xoxb-{rng.randrange(10**11)}-{rng.randrange(10**12)}-"
        + "".join(rng.choice(string.ascii_lowercase) for _ in range(24)),
    ])


PLANTERS = {
    k.EMAIL: email, k.PHONE: phone, k.CARD: card, k.IBAN: iban_, k.NATIONAL_ID: national_id, k.SSN: ssn,
    k.IP: ip, k.AWS_KEY: aws_key, k.JWT: jwt_, k.PRIVATE_KEY: private_key, k.URL_PASSWORD: url_password,
    k.API_TOKEN: api_token,
}


def planted(rng: random.Random, kind: str) -> str:
    """A value of ``kind``, alone or inside a sentence (half the time)."""
    v = PLANTERS[kind](rng)
    if rng.random() < 0.5:
        return f"{_text(rng, rng.randrange(2, 6))} {v} {_text(rng, rng.randrange(0, 4))}".strip()
    return v


_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def non_pii(rng: random.Random) -> object:
    """A value that is not PII or a secret, in the shapes events are full of."""
    which = rng.randrange(10)
    if which == 0:
        return f"ord-{rng.randrange(10**5, 10**9)}"
    if which == 1:
        return f"ORD-{rng.randrange(2020, 2027)}-{rng.randrange(10**6):06d}"
    if which == 2:
        head = "".join(rng.choice(string.ascii_uppercase) for _ in range(2))
        tail = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(4))
        return f"SKU-{head}{rng.randrange(100):02d}-{tail}"
    if which == 3:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if which == 4:
        t = _T0 + timedelta(seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6))
        return t.isoformat().replace("+00:00", "Z") if rng.random() < 0.7 else int(t.timestamp())
    if which == 5:
        return rng.choice([f"{rng.randrange(1, 5000)}.{rng.randrange(100):02d}", round(rng.uniform(1, 5000), 2),
                           f"EUR {rng.randrange(1, 999)},{rng.randrange(100):02d}"])
    if which == 6:
        h = rng.choice([hashlib.sha256, hashlib.sha1, hashlib.md5])
        return h(rng.randbytes(16)).hexdigest()
    if which == 7:
        return _text(rng, rng.randrange(3, 15))
    if which == 8:
        return rng.choice(["placed", "shipped", "cancelled", "refunded", "EUR", "USD", "de-DE", "express"])
    return f"{rng.randrange(1, 20)}.{rng.randrange(20)}.{rng.randrange(50)}"  # versions, sizes


def corpus(seed: int = 19, per_kind: int = 300, clean: int = 5000) -> tuple[list[tuple[str, str]], list[object]]:
    """(kind, value) planted pairs and non-PII values."""
    rng = random.Random(seed)
    plants = [(kind, planted(rng, kind)) for kind in PLANTERS for _ in range(per_kind)]
    return plants, [non_pii(rng) for _ in range(clean)]


def order_event(rng: random.Random, i: int, note: str | None = None) -> dict[str, object]:
    """An order with untagged free-text fields next to the usual ids, SKUs and prices."""
    return {
        "order_id": f"ord-{100000 + i}",
        "placed_at": (_T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "customer": {"id": f"c{i % 500}", "tier": rng.choice(["gold", "silver"])},
        "items": [{"sku": f"SKU-AB{i % 90:02d}-X{i % 9}Y9", "qty": 1 + i % 3,
                   "price": round(5 + (i % 200) * 0.5, 2)}],
        "total": round(5 + (i % 200) * 0.5, 2),
        "notes": note if note is not None else _text(rng, 6),
        "trace": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }
