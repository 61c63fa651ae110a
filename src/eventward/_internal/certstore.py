"""The deployment CA's book of issued certificates: issue, renew, revoke, CRL, NATS pins, expiry.

Every certificate the CA signs once ``eventward pki init`` ran is recorded here (serial,
principal, validity, the SHA-256 of its public key), so it can be listed, renewed and revoked.
Revocation is enforced three ways, each within a bound and without a restart:

* the gateway and the control API (one process) re-read ``certs/crl.pem`` every
  ``gateway.tls.reload_s`` (default 5 s): new handshakes are checked against it by OpenSSL and
  requests on already-open connections by serial number;
* nats-server has no CRL option (v2.15: only OCSP peer checks, which need a responder), so
  eventward writes an allow-list instead: ``pinned_certs`` (SHA-256 of each valid certificate's
  public key) in every node's TLS block, rewritten and reloaded with SIGHUP on issue, renewal
  and revocation; nats-server then refuses the revoked key at the handshake and disconnects
  clients already connected with it. A revoked key is never pinned again, even in a later
  certificate;
* the CRL carries a ``next_update`` (7 days): a CRL that is not republished in time makes
  OpenSSL refuse every client certificate (fail closed); ``serve`` republishes it daily.

Every signature (certificates, the CRL) goes through the CA's signer (``casigner``): a 0600
``certs/ca.key`` by default, or a key held in a PKCS#11 token, Transit or AWS KMS when
``pki.ca_key`` says so; each result is verified against ``ca.crt`` before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventward._internal import pki
from eventward._internal.casigner import sign_crl
from eventward._internal.log.sqlite import connect, write_txn
from eventward.errors import ConfigError, ConflictError, InputError, NotFoundError

DB_NAME = "issued.db"
CRL_NAME = "crl.pem"
DEFAULT_DAYS = 30
CRL_DAYS = 7
VALID, REVOKED = "valid", "revoked"
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued(
    serial TEXT PRIMARY KEY, principal TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    not_before REAL NOT NULL, not_after REAL NOT NULL, spki TEXT NOT NULL, status TEXT NOT NULL,
    revoked_at REAL, reason TEXT, alerted REAL)
"""
_COLS = "serial, principal, kind, path, not_before, not_after, spki, status, revoked_at, reason"
_SERIAL = re.compile(r"^[0-9a-f]{1,40}$")


@dataclass(frozen=True)
class CertRecord:
    serial: str  # lowercase hex
    principal: str
    kind: str  # "client", "server" or "server+client"
    path: str
    not_before: float
    not_after: float
    spki: str  # hex SHA-256 of the SubjectPublicKeyInfo (what nats-server pins)
    status: str
    revoked_at: float | None
    reason: str | None

    def days_left(self, now: float | None = None) -> float:
        return (self.not_after - (time.time() if now is None else now)) / 86400

    def as_json(self) -> dict[str, object]:
        return {
            "serial": self.serial, "principal": self.principal, "kind": self.kind, "status": self.status,
            "not_after": dt.datetime.fromtimestamp(self.not_after, dt.UTC).isoformat(),
            "days_left": round(self.days_left(), 2), "reason": self.reason, "path": self.path,
        }


def spki_sha256(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _kind(cert: x509.Certificate) -> str:
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return "client"
    server = ExtendedKeyUsageOID.SERVER_AUTH in usages
    client = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    return "server+client" if server and client else "server" if server else "client"


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def load_cert_file(path: Path) -> x509.Certificate:
    """A PEM certificate from a file, or a ConfigError naming the file (never its bytes)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"certificate {path} does not exist") from None
    except (ValueError, OSError):
        raise InputError(f"{path} is not a PEM X.509 certificate") from None


class CertRegistry:
    """The issued-certificate table (``certs/issued.db``, 0600) of one deployment CA."""

    def __init__(self, certs: Path) -> None:
        self.certs = certs
        self._lock = threading.Lock()
        certs.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = connect(certs / DB_NAME, synchronous="FULL")
        with self._lock, write_txn(self._db, "create certificate schema") as db:
            db.execute(_SCHEMA)

    @staticmethod
    def managed(certs: Path) -> bool:
        """Whether ``pki init`` ran for this certificate directory."""
        return (certs / DB_NAME).is_file()

    def close(self) -> None:
        self._db.close()

    # --- records ----------------------------------------------------------------------------
    def record(self, cert: x509.Certificate, path: Path | str = "") -> CertRecord:
        serial = format(cert.serial_number, "x")
        row = (
            serial, _cn(cert), _kind(cert), str(path), cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(), spki_sha256(cert), VALID,
        )
        with self._lock, write_txn(self._db, "record certificate") as db:
            db.execute(
                "INSERT OR IGNORE INTO issued(serial, principal, kind, path, not_before, not_after, spki, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return self.get(serial)

    def _rows(self, where: str = "", args: Sequence[object] = ()) -> list[CertRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM issued {where} ORDER BY not_after", args).fetchall()
        return [CertRecord(*r) for r in rows]

    def list(self, principal: str | None = None) -> list[CertRecord]:
        return self._rows("WHERE principal = ?", (principal,)) if principal else self._rows()

    def get(self, serial: str) -> CertRecord:
        serial = serial.lower().removeprefix("0x")
        if not _SERIAL.match(serial):
            raise InputError("a certificate serial is 1..40 hexadecimal digits")
        rows = self._rows("WHERE serial = ?", (serial,))
        if not rows:
            raise NotFoundError(f"no certificate with serial {serial} was issued by this CA")
        return rows[0]

    def current(self, principal: str, now: float | None = None) -> CertRecord | None:
        """The valid certificate of ``principal`` that expires last."""
        now = time.time() if now is None else now
        live = [r for r in self.list(principal) if r.status == VALID and r.not_after > now]
        return live[-1] if live else None

    def revoke(self, serial: str, reason: str, at: float | None = None) -> CertRecord:
        if reason not in REASONS:
            raise InputError(f"revocation reason must be one of {', '.join(REASONS)}")
        rec = self.get(serial)
        if rec.status == REVOKED:
            raise ConflictError(f"certificate {rec.serial} is already revoked")
        with self._lock, write_txn(self._db, "revoke certificate") as db:
            db.execute(
                "UPDATE issued SET status = ?, revoked_at = ?, reason = ? WHERE serial = ?",
                (REVOKED, time.time() if at is None else at, reason, rec.serial),
            )
        return self.get(rec.serial)

    def pins(self, now: float | None = None) -> list[str]:
        """SHA-256 public-key pins nats-server may accept: valid, unexpired, never revoked."""
        now = time.time() if now is None else now
        rows = self._rows()
        burned = {r.spki for r in rows if r.status == REVOKED}
        return sorted({r.spki for r in rows if r.status == VALID and r.not_after > now} - burned)

    def expiring(self, within_days: float, now: float | None = None) -> list[CertRecord]:
        """Valid certificates that expire within ``within_days`` and were not alerted yet."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM issued WHERE status = ? AND not_after <= ? AND alerted IS NULL",
                (VALID, now + within_days * 86400),
            ).fetchall()
        return [CertRecord(*r) for r in rows]

    def mark_alerted(self, serial: str) -> None:
        with self._lock, write_txn(self._db, "mark expiry alert") as db:
            db.execute("UPDATE issued SET alerted = ? WHERE serial = ?", (time.time(), serial))

    # --- the CRL ----------------------------------------------------------------------------
    def publish_crl(self, ca_or_pair: pki.CA | pki.Issued, *, days: int = CRL_DAYS) -> Path:
        """Sign (through the CA's signer, verified) and write ``certs/crl.pem`` listing every revoked
        certificate (atomically); a signature that does not verify writes nothing."""
        crl = sign_revocations(pki.as_ca(ca_or_pair), self._rows("WHERE status = ?", (REVOKED,)), days=days)
        return write_crl(self.certs, crl)


def sign_revocations(
    ca: pki.CA, revoked: Sequence[CertRecord], *, days: int = CRL_DAYS
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` signed by the CA's signer and verified against ``ca.crt``."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(int(time.time() * 1000)), critical=False)
    )
    for r in revoked:
        revoked_at = dt.datetime.fromtimestamp(r.revoked_at or time.time(), dt.UTC)
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(r.serial, 16))
            .revocation_date(revoked_at)
            .add_extension(x509.CRLReason(REASONS.get(r.reason or "", x509.ReasonFlags.unspecified)), False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return sign_crl(builder, ca.signer, ca.cert)


def write_crl(certs: Path, crl: x509.CertificateRevocationList) -> Path:
    path = certs / CRL_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)
    return path


def load_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"CRL {path} does not exist") from None
    except (ValueError, OSError):
        raise ConfigError(f"CRL {path} is not a PEM X.509 CRL") from None


def revoked_serials(path: Path, ca_cert: x509.Certificate | None = None) -> frozenset[int]:
    """Serial numbers a CRL file revokes (its signature checked against ``ca_cert`` if given)."""
    crl = load_crl(path)
    if ca_cert is not None and not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise ConfigError(f"CRL {path} is not signed by the deployment CA")
    return frozenset(r.serial_number for r in crl)


# --- the operations behind ``eventward pki`` -------------------------------------------------


@contextlib.contextmanager
def _ca(certs: Path) -> Iterator[pki.CA]:
    """The CA with its signer (a token/KMS connection when configured), closed after use."""
    ca = pki.open_ca(certs)
    try:
        yield ca
    finally:
        ca.close()


def _registry(certs: Path) -> CertRegistry:
    if not CertRegistry.managed(certs):
        raise ConfigError(f"certificates in {certs} are not managed yet: run 'eventward pki init' first")
    return CertRegistry(certs)


def init(certs: Path, cn: str = "eventward CA") -> tuple[CertRegistry, list[CertRecord]]:
    """Create the CA (or adopt the existing one), the registry, and an empty CRL. Certificates
    already in ``certs/`` signed by the CA are adopted, so they can be listed and revoked."""
    if CertRegistry.managed(certs):
        raise ConflictError(f"the PKI in {certs} is already initialised")
    ca = pki.open_ca(certs, create=True, cn=cn)
    try:
        crl = sign_revocations(ca, [])  # before issued.db exists: a failing signer leaves the PKI uninitialised
    except BaseException:
        ca.close()
        raise
    reg = CertRegistry(certs)
    adopted = []
    for path in sorted([*certs.glob("*.crt"), *certs.glob("clients/*.crt")]):
        if path.name == "ca.crt":
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, OSError, InvalidSignature):  # not signed by this CA: left alone
            continue
        adopted.append(reg.record(cert, path))
    write_crl(certs, crl)
    ca.close()
    return reg, adopted


def _paths(certs: Path, principal: str, kind: str) -> tuple[Path, Path]:
    d = certs if kind.startswith("server") else certs / "clients"
    return d / f"{principal}.crt", d / f"{principal}.key"


def issue(
    certs: Path, principal: str, *, server: bool = False, sans: Sequence[str] = (), days: int = DEFAULT_DAYS,
) -> CertRecord:
    """A new certificate (client by default; ``server`` adds serverAuth) and its 0600 key."""
    if not 1 <= days <= 825:
        raise InputError("certificate lifetime must be 1..825 days")
    reg = _registry(certs)
    if reg.current(pki.check_cn(principal)) is not None:
        raise ConflictError(f"{principal} already has a valid certificate: renew or revoke it")
    with _ca(certs) as ca:
        issued = pki.issue_cert(ca, principal, server=server, client=True, sans=sans, days=days)
    cert, key = _paths(certs, principal, "server" if server else "client")
    pki.save(issued, cert, key)
    return reg.record(issued.cert, cert)


def renew(certs: Path, principal: str, *, days: int = DEFAULT_DAYS) -> CertRecord:
    """A fresh key and certificate for ``principal`` with the same usages and names, written
    over the old files (atomically). The old certificate stays valid until it expires, so
    processes still using it keep working until they reload."""
    reg = _registry(certs)
    old = reg.current(pki.check_cn(principal))
    if old is None:
        raise NotFoundError(f"{principal} has no valid certificate to renew: issue one")
    old_cert = load_cert_file(Path(old.path)) if old.path else None
    sans: list[str] = []
    if old_cert is not None and old.kind.startswith("server"):
        try:
            ext = old_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
            sans += [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
    server = old.kind.startswith("server")
    with _ca(certs) as ca:
        issued = pki.issue_cert(ca, principal, server=server, client=True, sans=sans, days=days)
    cert, key = (Path(old.path), Path(old.path).with_suffix(".key")) if old.path else _paths(certs, principal, old.kind)
    pki.save(issued, cert, key)
    return reg.record(issued.cert, cert)


def revoke(certs: Path, target: str, reason: str) -> list[CertRecord]:
    """Revoke one certificate (by serial) or every valid one of a principal; publish the CRL."""
    reg = _registry(certs)
    if reason not in REASONS:
        raise InputError(f"revocation reason must be one of {', '.join(REASONS)}")
    if _SERIAL.match(target.lower()) and any(r.serial == target.lower() for r in reg.list()):
        targets = [reg.get(target)]
        if targets[0].status == REVOKED:
            raise ConflictError(f"certificate {targets[0].serial} is already revoked")
    else:
        targets = [r for r in reg.list(target) if r.status == VALID]
        if not targets:
            raise NotFoundError(f"no valid certificate of {target[:64]!r} to revoke")
    # The CRL that will list them is signed (and verified) first: a CA key that cannot sign
    # (KMS down, wrong key) refuses before the book changes.
    at = time.time()
    revoked = [*reg._rows("WHERE status = ?", (REVOKED,)),
               *(dataclasses.replace(r, status=REVOKED, revoked_at=at, reason=reason) for r in targets)]
    with _ca(certs) as ca:
        crl = sign_revocations(ca, revoked)
    done = [reg.revoke(r.serial, reason, at) for r in targets]
    write_crl(certs, crl)
    return done


def sign_csr(certs: Path, csr_pem: bytes, principal: str, enrolled: bool, *, days: int = DEFAULT_DAYS) -> CertRecord:
    """Certify a service's CSR (its key never leaves it) for an enrolled principal."""
    if not enrolled:
        raise InputError(f"{principal[:64]!r} is not enrolled: approve its enrollment before certifying its key")
    reg = _registry(certs)
    with _ca(certs) as ca:
        cert = pki.certify_csr(ca, csr_pem, principal, days=days)
    # never over clients/<principal>.crt, whose key file belongs to another certificate
    path = certs / "issued" / f"{principal}-{cert.serial_number:x}.crt"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)
    return reg.record(cert, path)


def adopt(certs: Path, path: Path) -> CertRecord:
    """Book a certificate this CA signed before ``pki init`` (e.g. an enrollment approved
    earlier), so NATS pins it and it can be listed and revoked."""
    reg = _registry(certs)
    cert = load_cert_file(path)
    try:
        cert.verify_directly_issued_by(pki.ca_certificate(certs))
    except (ValueError, TypeError, InvalidSignature):
        raise InputError(f"{path} was not issued by this deployment's CA") from None
    return reg.record(cert, path)


def record_if_managed(certs: Path, cert: x509.Certificate, path: Path | str = "") -> None:
    """Record a certificate the CA just signed elsewhere (enrollment, first-use certificates)."""
    if CertRegistry.managed(certs):
        reg = CertRegistry(certs)
        try:
            reg.record(cert, path)
        finally:
            reg.close()


def is_enrolled(trust_db: Path, principal: str) -> bool:
    """Whether the trust registry holds a non-revoked key of ``principal`` (read-only look)."""
    if not trust_db.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{trust_db}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT 1 FROM keys WHERE principal = ? AND status != 'revoked' LIMIT 1", (principal,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        raise ConfigError(f"trust registry {trust_db} cannot be read") from None
    return row is not None


class ExpiryMonitor:
    """Raises one alert per certificate expiring within ``days``: an audit record
    (``pki.expiring``, metadata only) and the gateway counter
    ``eventward_gateway_certificates_expiring_total{kind}``. Also re-signs the CRL once less
    than half of its validity is left, so it never lapses while ``serve`` runs."""

    def __init__(self, certs: Path, days: float, *, audit: Any = None, metrics: Any = None) -> None:
        self.certs, self.days, self.audit, self.metrics = certs, days, audit, metrics

    def check(self, now: float | None = None) -> list[CertRecord]:
        reg = CertRegistry(self.certs)
        try:
            due = reg.expiring(self.days, now)
            for rec in due:
                if self.audit is not None:
                    self.audit.record(
                        "pki.expiring", principal="eventward-serve", resource=f"Certificate::{rec.serial}",
                        subject=rec.principal, days_left=round(rec.days_left(now), 2), kind=rec.kind,
                    )
                if self.metrics is not None:
                    self.metrics.cert_expiring.inc(rec.kind)
                reg.mark_alerted(rec.serial)
            crl = self.certs / CRL_NAME
            if crl.is_file():
                nxt = load_crl(crl).next_update_utc
                if nxt is None or nxt.timestamp() - time.time() < CRL_DAYS * 86400 / 2:
                    with _ca(self.certs) as ca:
                        reg.publish_crl(ca)
            return due
        finally:
            reg.close()


# --- NATS: the allow-list nats-server enforces ----------------------------------------------

_PINS = re.compile(r"^    pinned_certs: \[.*\]$", re.M)


def pins_line(pins: Sequence[str]) -> str:
    return "    pinned_certs: [" + ", ".join(f'"{p}"' for p in pins) + "]"


def apply_nats_pins(certs: Path, run_root: Path) -> list[str]:
    """Rewrite ``pinned_certs`` in every node config under ``run_root`` that has one and SIGHUP
    the running nodes; returns the names of the nodes reloaded."""
    from eventward._internal.log import natsserver

    if not CertRegistry.managed(certs):
        return []
    reg = CertRegistry(certs)
    try:
        line = pins_line(reg.pins())
    finally:
        reg.close()
    reloaded = []
    for node in natsserver.discover(run_root):
        text = node.config.read_text()
        if not _PINS.search(text):
            continue
        new = _PINS.sub(lambda _m: line, text)
        tmp = node.config.with_name(node.config.name + ".tmp")
        tmp.write_text(new)
        os.chmod(tmp, 0o600)
        tmp.replace(node.config)
        pid = natsserver.running(node)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            reloaded.append(node.name)
    return reloaded
