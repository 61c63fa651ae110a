"""A small private PKI for a deployment: one CA, server and client certificates for mTLS.

The broker (nats-server), the gateway and their clients authenticate each other with
certificates from the deployment's own CA, and a client certificate's CN *is* the eventward
principal (nats-server maps it to a user with ``verify_and_map``). ECDSA P-256 keys: every
TLS stack in use (Go, OpenSSL, librdkafka) accepts them. Private keys are written 0600.

The CA signs through a :class:`~eventward._internal.casigner.CASigner`: a 0600 ``certs/ca.key`` by default,
or a key held in a PKCS#11 token, Vault/OpenBao Transit or AWS KMS (``pki.ca_key`` in
eventward.yaml, :func:`open_ca`). Every certificate is verified against the CA before use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventward._internal.casigner import CAKeyConfig, CASigner, FileSigner, config_for, connect_signer, sign_certificate
from eventward._internal.home import read_secret, write_secret
from eventward.errors import ConfigError, InputError

# X.509 upper bound for a CN, and no characters that would need escaping in an RFC 4514 DN
# (nats-server matches the DN string, so "CN=a,O=b" as a CN must never be possible).
_CN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._:\-]{0,63}$")
_CA_CN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,63}$")
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (the key never appears in a repr)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def cn(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class CA:
    """The deployment CA: its certificate and whatever signs for it (the key may live elsewhere)."""

    cert: x509.Certificate
    signer: CASigner = field(repr=False)

    def close(self) -> None:
        self.signer.close()


def as_ca(ca: CA | Issued) -> CA:
    """A CA from either form: an ``Issued`` pair (file key in memory) signs with a FileSigner."""
    return ca if isinstance(ca, CA) else CA(ca.cert, FileSigner(ca.key))


def check_cn(cn: str) -> str:
    if not isinstance(cn, str) or not _CN.match(cn):
        raise InputError(
            f"invalid certificate name {str(cn)[:40]!r}: 1..64 of letters, digits, '@', '.', '_', ':', '-'"
        )
    return cn


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if "@" in value:
        return x509.RFC822Name(value)
    if not re.match(r"^[A-Za-z0-9*][A-Za-z0-9.\-]{0,252}$", value):
        raise InputError(f"invalid subject alternative name {value[:40]!r}")
    return x509.DNSName(value)


URI_PREFIX = "spiffe://eventward/"  # the URI form of a principal, SPIFFE-style


def principal_uri(principal: str) -> str:
    """The URI SAN every client certificate carries: the same identity as its CN and its
    DNS/e-mail SAN, for tools that map URIs (service meshes, SPIFFE-aware proxies)."""
    return URI_PREFIX + check_cn(principal)


def _principal_san(principal: str) -> x509.GeneralName:
    """The principal as a SAN: nats-server's ``verify_and_map`` tries e-mail SANs, then DNS SANs,
    before the full DN, so this makes the user name equal the principal (not ``CN=...``)."""
    return x509.RFC822Name(principal) if "@" in principal else x509.DNSName(principal)


def issue_ca(cn: str = "eventward CA", *, days: int = 3650) -> Issued:
    """A self-signed CA with a new in-memory key (the file backend): see :func:`self_sign_ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Issued(self_sign_ca(FileSigner(key), cn, days=days), key)


def self_sign_ca(signer: CASigner, cn: str = "eventward CA", *, days: int = 3650) -> x509.Certificate:
    """A self-signed CA certificate for ``signer``'s key that may only issue end-entity
    certificates (path length 0); verified before it is returned."""
    if not _CA_CN.match(cn):
        raise InputError(f"invalid CA name {cn[:40]!r}")
    public = signer.public_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return sign_certificate(builder, signer, None)


def issue_cert(
    ca: CA | Issued,
    cn: str,
    *,
    server: bool = False,
    client: bool = False,
    sans: Sequence[str] = (),
    days: int = 397,
) -> Issued:
    """An end-entity certificate for TLS servers and/or clients, signed by ``ca``.

    ``sans`` are IP addresses, DNS names or e-mail addresses. A server certificate without
    SANs would be rejected by every modern client, so one is required. A client-only
    certificate also carries its CN (the principal) as a SAN, see ``_principal_san``.
    """
    check_cn(cn)
    if not (server or client):
        raise InputError(f"certificate {cn!r} must be for a server, a client, or both")
    if server and not sans:
        raise InputError(f"server certificate {cn!r} needs at least one subject alternative name")
    key = ec.generate_private_key(ec.SECP256R1())
    return Issued(_certify(ca, cn, key.public_key(), server=server, client=client, sans=sans, days=days), key)


def certify_csr(ca: CA | Issued, csr_pem: bytes, cn: str, *, days: int = 30) -> x509.Certificate:
    """A client certificate for a key that never left its service: the CSR's signature proves
    possession, and its subject must be exactly ``cn`` (the enrolled principal)."""
    check_cn(cn)
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InputError("the certificate request is not a PEM PKCS#10 CSR") from None
    if not csr.is_signature_valid:
        raise InputError("the certificate request's signature does not verify (no proof of key possession)")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [cn]:
        raise InputError("the certificate request's subject is not the enrolled principal")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InputError("the certificate request must carry a P-256 ECDSA key")
    return _certify(ca, cn, key, server=False, client=True, sans=(), days=days)


def _certify(
    ca_or_pair: CA | Issued, cn: str, public_key: ec.EllipticCurvePublicKey, *, server: bool, client: bool,
    sans: Sequence[str], days: int,
) -> x509.Certificate:
    ca = as_ca(ca_or_pair)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.signer.public_key()), critical=False
        )
    )
    names = [_san(s) for s in sans]
    if client and not server:
        names.append(_principal_san(cn))
    if client:
        names.append(x509.UniformResourceIdentifier(principal_uri(cn)))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return sign_certificate(builder, ca.signer, ca.cert)


def save(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (public) and the key (0600, atomically)."""
    write_secret(key_path, issued.key_pem())
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = cert_path.with_name(cert_path.name + ".tmp")
    tmp.write_bytes(issued.cert_pem())
    tmp.replace(cert_path)


def load(cert_path: Path, key_path: Path) -> Issued:
    """Load a pair written by ``save``; a key readable by others is refused."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"certificate {cert_path} does not exist") from None
    except ValueError:
        raise ConfigError(f"certificate {cert_path} is not a PEM X.509 certificate") from None
    try:
        key = serialization.load_pem_private_key(read_secret(key_path), password=None)
    except ValueError:
        raise ConfigError(f"key {key_path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"key {key_path} is not an ECDSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ConfigError(f"key {key_path} does not belong to certificate {cert_path}")
    return Issued(cert, key)


def load_or_issue_ca(cert_path: Path, key_path: Path, cn: str = "eventward CA") -> Issued:
    """A CA pair kept in files, created on first use (the file backend; see :func:`open_ca`).

    Checked and made under an exclusive lock on a file beside it: processes creating it at once
    (``serve`` replicas sharing one home) make ONE CA; without it each wrote its own key and
    certificate over the other's (a certificate of one CA beside the key of another)."""
    with _first_use_lock(cert_path):
        if cert_path.exists():
            return load(cert_path, key_path)
        ca = issue_ca(cn)
        save(ca, cert_path, key_path)
        return ca


@contextlib.contextmanager
def _first_use_lock(cert_path: Path) -> Iterator[None]:
    """An exclusive lock on ``.<name>.lock`` beside a certificate made on first use: processes
    sharing a home (``serve`` replicas) check and make it one at a time, so one pair is written."""
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(cert_path.with_name(f".{cert_path.name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def open_ca(
    certs: Path, *, create: bool = False, cn: str = "eventward CA", key: CAKeyConfig | None = None
) -> CA:
    """The deployment CA of ``certs``, signing where ``pki.ca_key`` says (default: ``certs/ca.key``).

    With ``create`` a missing CA is made: the key is generated in the token/KMS (or an existing
    key of the configured name is used) and the certificate self-signed through it; only
    ``ca.crt`` is written, after the signature verified. An existing ``ca.crt`` must belong to the
    configured key, so switching backends cannot silently mint a second CA."""
    key = key or config_for(certs)
    cert_path, key_path = ca_paths(certs)
    if key.backend == "file":
        pair = load_or_issue_ca(cert_path, key_path, cn) if create else _load_existing(cert_path, key_path, certs)
        return CA(pair.cert, FileSigner(pair.key))
    exists = cert_path.exists()
    if not exists and not create:
        raise ConfigError(f"no deployment CA in {certs}: run 'eventward pki init' first")
    cert = _load_cert(cert_path) if exists else None
    expect = cert.public_key() if cert is not None else None
    if not isinstance(expect, ec.EllipticCurvePublicKey):
        expect = None
    signer = connect_signer(key, create=not exists, expect=expect)
    try:
        if cert is not None:
            if cert.public_key() != signer.public_key():
                raise ConfigError(f"the CA key in {signer.where} does not belong to {cert_path}; "
                                  "pki.ca_key names another key than the one this CA was made with")
            return CA(cert, signer)
        cert = self_sign_ca(signer, cn)
        certs.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cert_path.with_name(cert_path.name + ".tmp")
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp.replace(cert_path)
        return CA(cert, signer)
    except BaseException:
        signer.close()
        raise


def _load_existing(cert_path: Path, key_path: Path, certs: Path) -> Issued:
    if not cert_path.exists():
        raise ConfigError(f"no deployment CA in {certs}: run 'eventward pki init' first")
    return load(cert_path, key_path)


def ca_certificate(certs: Path) -> x509.Certificate:
    """``certs/ca.crt`` alone (no key, no token or KMS connection): what verifiers need."""
    path = ca_paths(certs)[0]
    if not path.exists():
        raise ConfigError(f"no deployment CA in {certs}: run 'eventward pki init' first")
    return _load_cert(path)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (ValueError, OSError):
        raise ConfigError(f"certificate {path} is not a readable PEM X.509 certificate") from None


# --- a deployment's certificate files (Home.certs) ---------------------------------------------


def ca_paths(certs: Path) -> tuple[Path, Path]:
    return certs / "ca.crt", certs / "ca.key"


def ensure_server_cert(
    certs: Path, name: str, sans: Sequence[str] = ("localhost", "127.0.0.1")
) -> tuple[Path, Path]:
    """``certs/<name>.crt|.key`` from the deployment CA, issued on first use. Also valid as a
    client certificate, which cluster routes (server-to-server mTLS) need."""
    cert, key = certs / f"{name}.crt", certs / f"{name}.key"
    if not cert.exists():
        with _first_use_lock(cert):
            if not cert.exists():
                ca = open_ca(certs, create=True)
                try:
                    issued = issue_cert(ca, name, server=True, client=True, sans=sans, days=_first_use_days(certs))
                finally:
                    ca.close()
                save(issued, cert, key)
                _record(certs, issued.cert, cert)
    return cert, key


def ensure_client_cert(certs: Path, principal: str) -> tuple[Path, Path]:
    """``certs/clients/<principal>.crt|.key`` from the deployment CA, issued on first use."""
    check_cn(principal)
    cert, key = certs / "clients" / f"{principal}.crt", certs / "clients" / f"{principal}.key"
    if not cert.exists():
        with _first_use_lock(cert):
            if not cert.exists():
                ca = open_ca(certs, create=True)
                try:
                    issued = issue_cert(ca, principal, client=True, days=_first_use_days(certs))
                finally:
                    ca.close()
                save(issued, cert, key)
                _record(certs, issued.cert, cert)
    return cert, key


def _first_use_days(certs: Path) -> int:
    """30 days once ``eventward pki init`` manages the CA (renewal, revocation and expiry alerts
    exist then); 397 before, when nothing would renew them."""
    from eventward._internal.certstore import DEFAULT_DAYS, CertRegistry

    return DEFAULT_DAYS if CertRegistry.managed(certs) else 397


def _record(certs: Path, cert: x509.Certificate, path: Path) -> None:
    """Book a certificate issued on first use, once ``eventward pki init`` manages this CA."""
    from eventward._internal.certstore import record_if_managed

    record_if_managed(certs, cert, path)
