"""JWKS loading for bearer-token verification: which public keys may sign, and for which algorithm.

Keys are looked up by ``kid`` only, and each key is bound to the algorithms its type allows, so
a token can never choose how its own signature is checked (no ``alg: none``, no HMAC keyed with
a public key, no RSA key used for ECDSA). Symmetric (``oct``) keys are refused outright: a
gateway that verifies with a shared secret can also mint tokens.

A JWKS URL is fetched only at startup and on refresh, with a timeout and a size cap, over HTTPS
(plain HTTP is allowed to loopback addresses only, for tests and sidecars).
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from eventward.errors import ConfigError

MAX_JWKS_BYTES = 1024 * 1024
MIN_RSA_BITS = 2048

# The key type (and curve) each allowed algorithm requires. HS*/none are deliberately absent.
ALG_KEYS: dict[str, tuple[str, frozenset[str]]] = {
    "RS256": ("RSA", frozenset()),
    "RS384": ("RSA", frozenset()),
    "RS512": ("RSA", frozenset()),
    "PS256": ("RSA", frozenset()),
    "PS384": ("RSA", frozenset()),
    "PS512": ("RSA", frozenset()),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


@dataclass(frozen=True)
class VerifyKey:
    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", if it pins one
    key: Any  # a cryptography public key

    def allows(self, alg: str) -> bool:
        """Whether a token header's ``alg`` may be verified with this key."""
        need = ALG_KEYS.get(alg)
        if need is None:
            return False
        kty, curves = need
        if self.kty != kty or (curves and self.crv not in curves):
            return False
        return self.alg is None or self.alg == alg

    def __repr__(self) -> str:
        return f"VerifyKey(kid={self.kid!r}, kty={self.kty!r}, crv={self.crv!r}, alg={self.alg!r})"


def check_algorithms(algorithms: list[str]) -> tuple[str, ...]:
    if not algorithms:
        raise ConfigError("gateway.jwt.algorithms must list at least one algorithm")
    bad = [a for a in algorithms if a not in ALG_KEYS]
    if bad:
        raise ConfigError(
            f"gateway.jwt.algorithms: {', '.join(map(str, bad))} not allowed "
            f"(asymmetric only: {', '.join(ALG_KEYS)})"
        )
    return tuple(algorithms)


def parse_jwks(doc: Any, where: str) -> dict[str, VerifyKey]:
    """Validate a JWKS document; every signing key needs a unique ``kid``."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ConfigError(f"{where}: a JWKS must be an object with a 'keys' array")
    out: dict[str, VerifyKey] = {}
    for i, jwk in enumerate(doc["keys"]):
        here = f"{where}: keys[{i}]"
        if not isinstance(jwk, Mapping):
            raise ConfigError(f"{here} is not an object")
        if jwk.get("use", "sig") != "sig":
            continue  # encryption keys are not for us
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        kid, kty = jwk.get("kid"), jwk.get("kty")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise ConfigError(f"{here} has no usable 'kid' (tokens are matched to keys by kid)")
        if kid in out:
            raise ConfigError(f"{here}: kid {kid!r} appears twice")
        if kty not in ("RSA", "EC", "OKP"):
            raise ConfigError(
                f"{here} (kid {kid!r}): key type {str(kty)[:8]!r} refused; asymmetric keys only"
            )
        if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ConfigError(f"{here} (kid {kid!r}) contains private key material; publish public keys only")
        alg = jwk.get("alg")
        if alg is not None and alg not in ALG_KEYS:
            raise ConfigError(f"{here} (kid {kid!r}): algorithm {str(alg)[:16]!r} refused")
        try:
            key = PyJWK(dict(jwk), algorithm=alg).key
        except (PyJWTError, ValueError, TypeError):
            raise ConfigError(f"{here} (kid {kid!r}) is not a valid public key") from None
        if kty == "RSA" and key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{here} (kid {kid!r}): RSA keys must have at least {MIN_RSA_BITS} bits")
        crv = jwk.get("crv")
        out[kid] = VerifyKey(kid, kty, crv if isinstance(crv, str) else None, alg, key)
    if not out:
        raise ConfigError(f"{where}: no signing keys")
    return out


def load_file(path: str | Path) -> dict[str, VerifyKey]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError:
        raise ConfigError(f"JWKS file {p} cannot be read") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise ConfigError(f"JWKS file {p} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ConfigError(f"JWKS file {p} is not valid JSON") from None
    return parse_jwks(doc, str(p))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch_url(url: str, timeout_s: float) -> dict[str, VerifyKey]:
    """Blocking fetch (call it from a thread inside the server); errors are ConfigError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        raise ConfigError("gateway.jwt.jwks_url must be https:// (http:// only to a loopback address)")
    handlers: list[urllib.request.BaseHandler] = []
    if _is_loopback(host):
        handlers.append(urllib.request.ProxyHandler({}))  # never send loopback traffic to a proxy
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked)
    where = f"JWKS at {parts.scheme}://{parts.netloc}{parts.path}"
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            raw = resp.read(MAX_JWKS_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{where} cannot be fetched ({type(e).__name__})") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{where} is not valid JSON") from None
    return parse_jwks(doc, where)
