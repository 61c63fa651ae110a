"""The gateway's TLS server context: modern protocol and suites only, client certificates verified.

TLS 1.2 is the floor (1.0/1.1 have no AEAD suites and are deprecated by RFC 8996); for 1.2
only forward-secret AEAD suites are offered; TLS 1.3 suites are all AEAD already.
Compression (CRIME) and renegotiation are off. In mTLS mode a client certificate is required
and must chain to the configured client CA; in JWT mode one is optional (verified if sent,
then usable for certificate-bound tokens).
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from eventward._internal import pki
from eventward._internal.home import Home, read_secret
from eventward.errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(
    cert: Path, key: Path, client_ca: Path | None, *, require_client_cert: bool, crl: Path | None = None
) -> ssl.SSLContext:
    """``crl``: when the file exists, client certificates are also checked against it (leaf only:
    the CA is the deployment's own root); an expired CRL then refuses every client certificate."""
    if require_client_cert and client_ca is None:
        raise ConfigError("mTLS needs a client CA certificate (gateway.tls.client_ca)")
    for what, path in (("certificate", cert), ("client CA", client_ca)):
        if path is not None and not path.is_file():
            raise ConfigError(f"gateway TLS {what} {path} does not exist")
    read_secret(key)  # refuses a missing or group/world-readable private key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_SINGLE_ECDH_USE
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError):
        raise ConfigError(f"gateway TLS certificate {cert} and key {key} cannot be loaded together") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (ssl.SSLError, OSError):
            raise ConfigError(f"gateway client CA {client_ca} is not a PEM certificate") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        if crl is not None and crl.is_file():
            try:
                ctx.load_verify_locations(cafile=str(crl))
            except (ssl.SSLError, OSError):
                raise ConfigError(f"gateway CRL {crl} is not a PEM X.509 CRL") from None
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RevokedSerials:
    """Serial numbers the CRL revokes, re-read with the TLS context: connections opened before
    a revocation are refused at their next request, not only new handshakes."""

    def __init__(self, crl: Path | None, ca: Path | None) -> None:
        self.crl, self.ca = crl, ca
        self.serials: frozenset[int] = frozenset()
        self.reload()

    def reload(self) -> None:
        if self.crl is None or not self.crl.is_file():
            self.serials = frozenset()
            return
        from cryptography import x509

        from eventward._internal.certstore import revoked_serials

        ca_cert = None
        if self.ca is not None and self.ca.is_file():
            try:
                ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
            except ValueError:
                raise ConfigError(f"gateway client CA {self.ca} is not a PEM certificate") from None
        self.serials = revoked_serials(self.crl, ca_cert)

    def __contains__(self, serial: object) -> bool:
        return serial in self.serials


def ensure_home_material(home: Home, host: str, server_name: str) -> None:
    """Issue the gateway's server certificate from the deployment CA on first use (the CA too,
    if the home has none yet), so ``eventward serve`` on a home needs no manual PKI step.

    The certificate names ``localhost``, 127.0.0.1 and ``host`` when that is a specific address;
    re-issue it (delete ``certs/<server_name>.*``) to serve under another name.
    """
    sans = ["localhost", "127.0.0.1"]
    if host not in sans and not _wildcard(host):
        sans.append(host)
    pki.ensure_server_cert(home.ensure().certs, server_name, sans=sans)


def _wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
