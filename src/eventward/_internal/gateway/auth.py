"""Who is calling: a principal from a verified client certificate or from a bearer JWT.

Every failure is an AuthenticationError whose ``reason`` is a stable code (``expired``,
``unknown_kid``, ``unmapped_subject``...) for metrics, audit and clients. Messages never echo
a token, a claim value or a certificate subject.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography import x509
from jwt import exceptions as jwt_errors

from eventward._internal.gateway.jwks import VerifyKey, check_algorithms
from eventward._internal.gateway.mapping import MAX_PRINCIPAL_CHARS, PrincipalMapper
from eventward.errors import AuthenticationError, ConfigError

MAX_TOKEN_BYTES = 6 * 1024  # below aiohttp's 8190-byte header line, so this check is what refuses
# RFC 8725 3.11 explicit typing: plain JWTs and RFC 9068 access tokens only, so an ID token,
# a logout token or a signed request object (other ``typ``) is never accepted as an access token.
ALLOWED_TYP = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9.\-]{0,62}$")


def alias_of_issuer(issuer: str, alias: str = "") -> str:
    """The short name of an issuer in principal names: ``alias`` if given, else its host name."""
    from urllib.parse import urlsplit

    name = alias or (urlsplit(issuer).hostname or "")
    if not _ALIAS.match(name):
        raise ConfigError("gateway.jwt.issuer_alias must be 1..63 of a-z, 0-9, '.', '-' (set it explicitly)")
    return name


@dataclass(frozen=True)
class Principal:
    name: str
    method: str  # "mtls", "jwt" or "dev"


class Authenticator(Protocol):
    #: the HTTP auth scheme to challenge with (``WWW-Authenticate``), if any
    scheme: str | None

    def authenticate(self, authorization: str | None, peer_der: bytes | None) -> Principal:
        """``authorization`` is the raw header; ``peer_der`` the client certificate the TLS
        handshake verified (None when none was presented)."""
        ...


def _refuse(reason: str, message: str) -> AuthenticationError:
    return AuthenticationError(message, reason=reason)


def subject_dn(der: bytes) -> str:
    """The RFC 4514 subject string of a DER certificate (see ``mapping`` for the RDN order)."""
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        raise _refuse("bad_client_cert", "client certificate cannot be parsed") from None


class MtlsAuthenticator:
    """The principal is the verified client certificate's subject, mapped by Kafka-style rules."""

    scheme: str | None = None

    def __init__(self, mapper: PrincipalMapper, cache_size: int = 4096, revoked: Container[int] = ()) -> None:
        self.mapper = mapper
        self.revoked = revoked  # serials of the CRL in force (re-read by the server)
        # Mapping is a pure function of the certificate bytes; cache it per distinct certificate.
        self._map: Callable[[bytes], tuple[str, int]] = functools.lru_cache(maxsize=cache_size)(
            self._map_uncached
        )

    def _map_uncached(self, der: bytes) -> tuple[str, int]:
        try:
            serial = x509.load_der_x509_certificate(der).serial_number
        except ValueError:
            raise _refuse("bad_client_cert", "client certificate cannot be parsed") from None
        return self.mapper.map(subject_dn(der)), serial

    def authenticate(self, authorization: str | None, peer_der: bytes | None) -> Principal:
        if peer_der is None:
            raise _refuse("no_client_cert", "a verified client certificate is required")
        name, serial = self._map(peer_der)
        if serial in self.revoked:  # a connection opened before the revocation
            raise _refuse("revoked", "the client certificate has been revoked")
        return Principal(name, "mtls")


class JwtAuthenticator:
    """OAuth2 bearer JWTs (RFC 6750 / RFC 8725 practice) verified against a JWKS.

    The key is chosen by ``kid`` and must be of the type the header's (allow-listed) ``alg``
    needs, so the token never decides how it is verified. Tokens carrying an RFC 8705
    ``cnf.x5t#S256`` are honoured only over a connection that presented that certificate.

    The principal is never the raw subject: ``<issuer-alias>:<sub>`` is mapped by Kafka-style
    ``subject_rules`` (first full match wins), and with no matching rule it becomes
    ``jwt:<issuer-alias>:<sub>``, a namespace no mTLS or local principal lives in, so a token
    whose ``sub`` is ``admin`` is ``jwt:idp:admin``, not ``admin``. Keys not refreshed
    successfully for ``max_key_age_s`` are dropped: every token is then refused (fail closed)
    until a refresh succeeds.
    """

    scheme: str | None = "Bearer"

    def __init__(
        self,
        keys: dict[str, VerifyKey],
        *,
        issuer: str,
        audience: str,
        algorithms: list[str] | tuple[str, ...] = ("RS256", "ES256", "EdDSA"),
        principal_claim: str = "sub",
        leeway_s: float = 30.0,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        issuer_alias: str = "",
        subject_rules: str = "",
        max_key_age_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = dict(keys)
        self._clock = clock
        self._loaded_at = clock()
        self.max_key_age_s = max_key_age_s
        self.alias = alias_of_issuer(issuer, issuer_alias)
        self.subject_mapper = PrincipalMapper(subject_rules) if subject_rules.strip() else None
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(check_algorithms(list(algorithms)))
        self.principal_claim = principal_claim
        self.leeway_s = leeway_s
        self.max_token_bytes = max_token_bytes

    def set_keys(self, keys: dict[str, VerifyKey]) -> None:
        """Swap in a refreshed JWKS (one assignment: readers see the old or the new set)."""
        self._keys = dict(keys)
        self._loaded_at = self._clock()

    @property
    def keys_stale(self) -> bool:
        """True once the keys have gone ``max_key_age_s`` without a successful refresh."""
        return self.max_key_age_s is not None and self._clock() - self._loaded_at > self.max_key_age_s

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def authenticate(self, authorization: str | None, peer_der: bytes | None) -> Principal:
        token = self._bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError:
            raise _refuse("malformed", "bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _refuse("alg_not_allowed", "bearer token algorithm is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ALLOWED_TYP:
            raise _refuse("bad_typ", "bearer token type (typ) is not JWT or at+jwt")
        if "crit" in header or "b64" in header:  # RFC 7515 4.1.11: we understand no extensions
            raise _refuse("unsupported_header", "bearer token uses an unsupported critical header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("missing_kid", "bearer token header has no key id (kid)")
        if self.keys_stale:
            raise _refuse("jwks_stale", "the token signing keys could not be refreshed; refusing all tokens")
        key = self._keys.get(kid)
        if key is None:
            raise _refuse("unknown_kid", "bearer token is signed with an unknown key id")
        if not key.allows(alg):
            raise _refuse("alg_key_mismatch", "bearer token algorithm does not match its key's type")
        claims = self._verify(token, key, alg)
        name = claims.get(self.principal_claim)
        if not isinstance(name, str) or not name or len(name) > MAX_PRINCIPAL_CHARS or not name.isprintable():
            raise _refuse(
                "bad_principal", f"bearer token claim {self.principal_claim!r} is not a usable principal"
            )
        self._check_binding(claims, peer_der)
        return Principal(self._principal(name), "jwt")

    def _principal(self, sub: str) -> str:
        qualified = f"{self.alias}:{sub}"
        if self.subject_mapper is not None:
            try:
                return self.subject_mapper.map(qualified)
            except AuthenticationError as e:
                if e.details.get("reason") != "unmapped_subject":
                    raise
        name = f"jwt:{qualified}"
        if len(name) > MAX_PRINCIPAL_CHARS:
            raise _refuse("bad_principal", "bearer token subject is too long for a principal name")
        return name

    def _bearer(self, authorization: str | None) -> str:
        if not authorization:
            raise _refuse("missing_token", "a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refuse("bad_scheme", "the Authorization header must use the Bearer scheme")
        token = token.strip()
        if len(token) > self.max_token_bytes:
            raise _refuse("token_too_large", f"bearer token is longer than {self.max_token_bytes} bytes")
        return token

    def _verify(self, token: str, key: VerifyKey, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt_errors.ExpiredSignatureError:
            raise _refuse("expired", "bearer token has expired") from None
        except jwt_errors.ImmatureSignatureError:
            raise _refuse("not_yet_valid", "bearer token is not valid yet (nbf/iat in the future)") from None
        except jwt_errors.InvalidIssuerError:
            raise _refuse("bad_issuer", "bearer token issuer is not trusted") from None
        except jwt_errors.InvalidAudienceError:
            raise _refuse("bad_audience", "bearer token audience is not this gateway") from None
        except jwt_errors.MissingRequiredClaimError as e:
            raise _refuse("missing_claim", f"bearer token lacks the required claim {e.claim!r}") from None
        except jwt_errors.InvalidSignatureError:
            raise _refuse("bad_signature", "bearer token signature does not verify") from None
        except jwt_errors.PyJWTError:
            raise _refuse("invalid", "bearer token is invalid") from None

    @staticmethod
    def _check_binding(claims: dict[str, Any], peer_der: bytes | None) -> None:
        cnf = claims.get("cnf")
        if cnf is None:
            return
        want = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if not isinstance(want, str):
            raise _refuse("cert_binding", "bearer token confirmation (cnf) is not a certificate thumbprint")
        if peer_der is None:
            raise _refuse(
                "cert_binding", "bearer token is bound to a client certificate that was not presented"
            )
        have = base64.urlsafe_b64encode(hashlib.sha256(peer_der).digest()).rstrip(b"=").decode()
        if not hmac.compare_digest(have, want):
            raise _refuse("cert_binding", "bearer token is bound to a different client certificate")


class DevAuthenticator:
    """``--insecure-dev-no-auth``: everyone is one fixed principal. Loopback only, loudly logged."""

    scheme: str | None = None

    def __init__(self, principal: str = "dev") -> None:
        self.principal = Principal(principal, "dev")

    def authenticate(self, authorization: str | None, peer_der: bytes | None) -> Principal:
        return self.principal
