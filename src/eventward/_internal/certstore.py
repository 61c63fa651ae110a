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
from eventward._internal.log.sqlite import connect
from eventward._internal.store.migrations import CONTROL_SCHEMA
from eventward._internal.store.sqlcompat import PgTables, write
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
_CRL_SCHEMA = ("CREATE TABLE IF NOT EXISTS crl(id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL, "
               "pem TEXT NOT NULL)")
_COLS = "serial, principal, kind, path, not_before, not_after, spki, status, revoked_at, reason"
# Where the book's SQLite tables live with store.backend: postgres (migration 7): (qualified name, key column).
PKI_TABLES = {"issued": (f"{CONTROL_SCHEMA}.issued_certs", "serial"), "crl": (f"{CONTROL_SCHEMA}.crl", "id")}
PKI_LOCK = 0x65777063  # pg_advisory_xact_lock key of the book's writes ("ewpc")
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


def _pg_home(certs: Path) -> Any:
    """The home whose ``certs/`` this is when its store is PostgreSQL (its book lives in the shared
    database then, so every ``serve`` replica issues and revokes against one book), else None."""
    from eventward._internal.config import Config
    from eventward._internal.home import Home

    home = Home(certs.parent)
    if certs.name != "certs" or not home.config.is_file():
        return None
    return home if Config.load(home.config).store.backend == "postgres" else None


def _select(rows: Sequence[CertRecord], target: str) -> list[CertRecord]:
    """The certificates ``revoke`` means: one serial, or every valid one of a principal."""
    t = target.lower().removeprefix("0x")
    by_serial = [r for r in rows if r.serial == t] if _SERIAL.match(t) else []
    if by_serial:
        if by_serial[0].status == REVOKED:
            raise ConflictError(f"certificate {by_serial[0].serial} is already revoked")
        return by_serial
    targets = [r for r in rows if r.principal == target and r.status == VALID]
    if not targets:
        raise NotFoundError(f"no valid certificate of {target[:64]!r} to revoke")
    return targets


class CertRegistry:
    """The issued-certificate book of one deployment CA and its current CRL: ``certs/issued.db``
    (0600), or the shared database's ``eventward_control.issued_certs``/``crl`` when the home's
    ``store.backend`` is postgres. Writes that change what the CRL must say (revoke, publish) run
    in one write transaction (SQLite's ``BEGIN IMMEDIATE``, or the book's advisory lock) that
    re-reads the book, signs the CRL and writes ``crl.pem``, so two processes revoking at once
    cannot publish a CRL missing the other's revocation."""

    def __init__(self, certs: Path, *, db: PgTables | None = None) -> None:
        self.certs = certs
        self._lock = threading.Lock()
        certs.mkdir(parents=True, exist_ok=True, mode=0o700)
        if db is None and (home := _pg_home(certs)) is not None:
            from eventward._internal.store.sqlcompat import open_pg_tables

            db = open_pg_tables(home, PKI_TABLES, PKI_LOCK)
        self._db: sqlite3.Connection | PgTables
        if db is not None:
            self._db = db
        else:
            self._db = connect(certs / DB_NAME, synchronous="FULL")
            with self._lock, write(self._db, "create certificate schema") as c:
                c.execute(_SCHEMA)
                c.execute(_CRL_SCHEMA)

    @staticmethod
    def managed(certs: Path) -> bool:
        """Whether ``pki init`` ran for this certificate directory (on PostgreSQL: a CRL is stored)."""
        if _pg_home(certs) is None:
            return (certs / DB_NAME).is_file()
        reg = CertRegistry(certs)
        try:
            return reg.crl() is not None
        finally:
            reg.close()

    def close(self) -> None:
        self._db.close()

    # --- records ----------------------------------------------------------------------------
    def record(self, cert: x509.Certificate, path: Path | str = "", *, exclusive: bool = False) -> CertRecord:
        """Book ``cert`` (again: nothing changes). ``exclusive``: refuse (ConflictError) when a valid,
        unexpired certificate of the same principal for the same public key is booked already, so
        two replicas approving one enrollment at once book one certificate, not two."""
        serial = format(cert.serial_number, "x")
        row = (
            serial, _cn(cert), _kind(cert), str(path), cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(), spki_sha256(cert), VALID,
        )
        with self._lock, write(self._db, "record certificate") as db:
            if exclusive:
                other = db.execute(
                    "SELECT serial FROM issued WHERE principal = ? AND spki = ? AND status = ? AND not_after > ? "
                    "AND serial != ?", (row[1], row[6], VALID, time.time(), serial),
                ).fetchone()
                if other is not None:
                    raise ConflictError(f"the key of {row[1][:64]!r} is already certified (serial {other[0]}): "
                                        "another approval got there first")
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
        """Mark one certificate revoked (no CRL: ``revoke_and_publish`` is what ``pki revoke`` runs)."""
        if reason not in REASONS:
            raise InputError(f"revocation reason must be one of {', '.join(REASONS)}")
        rec = self.get(serial)
        with self._lock, write(self._db, "revoke certificate") as db:
            row = db.execute("SELECT status FROM issued WHERE serial = ?", (rec.serial,)).fetchone()
            if row is not None and row[0] == REVOKED:  # re-read inside the write: another writer may have won
                raise ConflictError(f"certificate {rec.serial} is already revoked")
            db.execute(
                "UPDATE issued SET status = ?, revoked_at = ?, reason = ? WHERE serial = ?",
                (REVOKED, time.time() if at is None else at, reason, rec.serial),
            )
        return self.get(rec.serial)

    def revoke_and_publish(self, ca: pki.CA, target: str, reason: str) -> list[CertRecord]:
        """Revoke one certificate (serial) or every valid one of a principal and publish the CRL
        listing every revocation, in ONE write transaction: the book is re-read under the write
        lock (a concurrent revoke of the same certificate is a ConflictError, of another one is in
        this CRL), the CRL is signed (and verified) before anything changes (a CA key that cannot
        sign leaves the book and the CRL as they were), then rows, stored CRL and ``crl.pem``."""
        if reason not in REASONS:
            raise InputError(f"revocation reason must be one of {', '.join(REASONS)}")
        with self._lock, write(self._db, "revoke certificate") as db:
            rows = [CertRecord(*r) for r in db.execute(f"SELECT {_COLS} FROM issued ORDER BY not_after").fetchall()]
            targets = _select(rows, target)
            at = time.time()
            revoked = [*(r for r in rows if r.status == REVOKED),
                       *(dataclasses.replace(r, status=REVOKED, revoked_at=at, reason=reason) for r in targets)]
            number = self._next_crl_number(db)
            crl = sign_revocations(ca, revoked, number=number)
            for r in targets:
                db.execute("UPDATE issued SET status = ?, revoked_at = ?, reason = ? WHERE serial = ? AND status = ?",
                           (REVOKED, at, reason, r.serial, VALID))
            self._store_crl(db, crl, number)
        return [self.get(r.serial) for r in targets]

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

    def mark_alerted(self, serial: str) -> bool:
        """Mark the expiry alert of ``serial`` raised; False when another replica did first."""
        with self._lock, write(self._db, "mark expiry alert") as db:
            cur = db.execute("UPDATE issued SET alerted = ? WHERE serial = ? AND alerted IS NULL",
                             (time.time(), serial))
            return bool(cur.rowcount)

    # --- the CRL ----------------------------------------------------------------------------
    def crl(self) -> tuple[int, bytes] | None:
        """The current CRL as stored (its number and PEM), or None before ``pki init``."""
        with self._lock:
            row = self._db.execute("SELECT number, pem FROM crl WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]).encode())

    @staticmethod
    def _next_crl_number(db: Any) -> int:
        """Strictly above the stored CRL's number (read under the write lock), time-based otherwise."""
        row = db.execute("SELECT number FROM crl WHERE id = 1").fetchone()
        return max(int(time.time() * 1000), int(row[0]) + 1 if row else 0)

    def _store_crl(self, db: Any, crl: x509.CertificateRevocationList, number: int) -> None:
        """Store the CRL and write ``crl.pem``, both inside the caller's write transaction (so CRL
        files are written in commit order; a failed commit after the file leaves a CRL that lists
        one revocation too many, never one too few, and the retried revoke republishes)."""
        pem = crl.public_bytes(serialization.Encoding.PEM).decode()
        db.execute("INSERT OR REPLACE INTO crl(id, number, pem) VALUES (1, ?, ?)", (number, pem))
        write_crl(self.certs, crl)

    def set_crl(self, crl: x509.CertificateRevocationList) -> Path:
        """Store an already signed CRL (``pki init``'s empty one) and write ``crl.pem``."""
        number = _crl_number(crl)
        with self._lock, write(self._db, "publish CRL") as db:
            row = db.execute("SELECT number FROM crl WHERE id = 1").fetchone()
            if row is None or int(row[0]) < number:
                self._store_crl(db, crl, number)
        return self.certs / CRL_NAME

    def publish_crl(self, ca_or_pair: pki.CA | pki.Issued, *, days: int = CRL_DAYS) -> Path:
        """Sign (through the CA's signer, verified) and write ``certs/crl.pem`` listing every revoked
        certificate (atomically, in one write transaction); a signature that does not verify writes nothing."""
        with self._lock, write(self._db, "publish CRL") as db:
            rows = [CertRecord(*r) for r in db.execute(f"SELECT {_COLS} FROM issued WHERE status = ?",
                                                       (REVOKED,)).fetchall()]
            number = self._next_crl_number(db)
            crl = sign_revocations(pki.as_ca(ca_or_pair), rows, days=days, number=number)
            self._store_crl(db, crl, number)
        return self.certs / CRL_NAME

    def sync_crl(self, path: Path | None = None) -> bool:
        """Write the stored CRL to ``path`` (default ``certs/crl.pem``) when the file holds an older
        one (another replica revoked): what every ``serve`` replica on PostgreSQL runs every
        ``gateway.tls.reload_s``, so its TLS reload picks the revocation up. True when written."""
        stored = self.crl()
        if stored is None:
            return False
        number, pem = stored
        path = self.certs / CRL_NAME if path is None else path
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = b""
        if current == pem:
            return False
        try:
            if current and _crl_number(x509.load_pem_x509_crl(current)) >= number:
                return False  # the file is newer (this host just published): the database catches up
        except ValueError:
            pass  # unreadable: replaced by the stored one
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(pem)
        tmp.replace(path)
        return True


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def sign_revocations(
    ca: pki.CA, revoked: Sequence[CertRecord], *, days: int = CRL_DAYS, number: int | None = None
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` signed by the CA's signer and verified against ``ca.crt``."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(int(time.time() * 1000) if number is None else number), critical=False)
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
    reg.set_crl(crl)  # last: on PostgreSQL the stored CRL is what makes the book "managed"
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
    with contextlib.closing(_registry(certs)) as reg:
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
    with contextlib.closing(_registry(certs)) as reg:
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
        cert, key = ((Path(old.path), Path(old.path).with_suffix(".key")) if old.path
                     else _paths(certs, principal, old.kind))
        pki.save(issued, cert, key)
        return reg.record(issued.cert, cert)


def revoke(certs: Path, target: str, reason: str) -> list[CertRecord]:
    """Revoke one certificate (by serial) or every valid one of a principal; publish the CRL.
    Book and CRL change in one write transaction (``CertRegistry.revoke_and_publish``)."""
    if reason not in REASONS:
        raise InputError(f"revocation reason must be one of {', '.join(REASONS)}")
    reg = _registry(certs)
    try:
        with _ca(certs) as ca:
            return reg.revoke_and_publish(ca, target, reason)
    finally:
        reg.close()


def sign_csr(certs: Path, csr_pem: bytes, principal: str, enrolled: bool, *, days: int = DEFAULT_DAYS) -> CertRecord:
    """Certify a service's CSR (its key never leaves it) for an enrolled principal."""
    if not enrolled:
        raise InputError(f"{principal[:64]!r} is not enrolled: approve its enrollment before certifying its key")
    with contextlib.closing(_registry(certs)) as reg:
        with _ca(certs) as ca:
            cert = pki.certify_csr(ca, csr_pem, principal, days=days)
        # never over clients/<principal>.crt, whose key file belongs to another certificate
        path = certs / "issued" / f"{principal}-{cert.serial_number:x}.crt"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp.replace(path)
        return reg.record(cert, path, exclusive=True)


def adopt(certs: Path, path: Path) -> CertRecord:
    """Book a certificate this CA signed before ``pki init`` (e.g. an enrollment approved
    earlier), so NATS pins it and it can be listed and revoked."""
    with contextlib.closing(_registry(certs)) as reg:
        cert = load_cert_file(path)
        try:
            cert.verify_directly_issued_by(pki.ca_certificate(certs))
        except (ValueError, TypeError, InvalidSignature):
            raise InputError(f"{path} was not issued by this deployment's CA") from None
        return reg.record(cert, path)


def record_if_managed(certs: Path, cert: x509.Certificate, path: Path | str = "", *, exclusive: bool = False) -> None:
    """Record a certificate the CA just signed elsewhere (enrollment, first-use certificates);
    ``exclusive`` as in ``CertRegistry.record`` (an approval: one certificate per enrolled key)."""
    if CertRegistry.managed(certs):
        reg = CertRegistry(certs)
        try:
            reg.record(cert, path, exclusive=exclusive)
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
            due = [rec for rec in reg.expiring(self.days, now) if reg.mark_alerted(rec.serial)]  # one replica alerts
            for rec in due:
                if self.audit is not None:
                    self.audit.record(
                        "pki.expiring", principal="eventward-serve", resource=f"Certificate::{rec.serial}",
                        subject=rec.principal, days_left=round(rec.days_left(now), 2), kind=rec.kind,
                    )
                if self.metrics is not None:
                    self.metrics.cert_expiring.inc(rec.kind)
            crl = self.certs / CRL_NAME
            if crl.is_file():
                nxt = load_crl(crl).next_update_utc
                if nxt is None or nxt.timestamp() - time.time() < CRL_DAYS * 86400 / 2:
                    with _ca(self.certs) as ca:
                        reg.publish_crl(ca)
            return due
        finally:
            reg.close()


class CrlSync:
    """A ``serve`` replica's copy of the CRL stored in the shared database (``store.backend:
    postgres``): ``run`` writes it to ``path`` when another replica published a newer one. The
    book stays open between runs; a database outage fails the run (logged) and the next retries."""

    def __init__(self, certs: Path, path: Path) -> None:
        self.certs, self.path = certs, path
        self._reg: CertRegistry | None = None

    @staticmethod
    def applies(certs: Path) -> bool:
        return _pg_home(certs) is not None

    def run(self) -> None:
        if self._reg is None:
            self._reg = CertRegistry(self.certs)
        self._reg.sync_crl(self.path)

    def close(self) -> None:
        if self._reg is not None:
            self._reg.close()
            self._reg = None


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
