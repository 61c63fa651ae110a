"""Erasure certificates: signed, logged, provable statements that a subject was crypto-shredded.

A certificate carries the erasure claims (subject hash, classes, DEK versions destroyed, the
KEK epochs after which residual copies are unrecoverable, reason code), the audit key's
signature over them, the audit record that announced it (which commits to the claims'
SHA-256), an inclusion proof of that record, and the signed checkpoint the proof is against.
Anyone with the audit verifier key can check it offline; with the log at hand they can also
check the log still extends that checkpoint.

Claims come from the key service's ErasureReceipt, taken as any mapping or object with the
fields, so this module does not depend on the key service's class.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.records import check_meta, check_time, decode, format_time
from eventward._internal.audit.signing import AuditVerifier, PublicKeyLike, statement
from eventward._internal.audit.tree import InclusionProof
from eventward._internal.audit.verify import verify_consistency_proof, verify_inclusion_proof
from eventward.errors import AuditIntegrityError, NotFoundError, ValidationError

CERT_TYPE = "eventward.erasure-certificate/v1"
KIND = "erasure-certificate"
ACTION = "erasure.certificate"
MAX_CERT_BYTES = 65536
_CLASS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
_REASON = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
_EPOCH = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_RECEIPT_FIELDS = (
    "subject_hash",
    "time",
    "erased_at",
    "classes",
    "dek_versions_destroyed",
    "destroyed",
    "deks_destroyed",
    "kek_epochs",
    "reason_code",
    "purged",
)
_CLAIMS = {
    "type",
    "log",
    "subject_hash",
    "erased_at",
    "classes",
    "dek_versions_destroyed",
    "kek_epochs",
    "reason_code",
    "purged",
    "issued_at",
}
_DOC = {"certificate", "signature", "record", "proof", "checkpoint"}


@dataclass(frozen=True)
class Certificate:
    claims: Mapping[str, Any]
    signature: bytes
    record: bytes  # the exact audit record bytes announcing the certificate
    proof: InclusionProof
    checkpoint: str  # signed checkpoint text the proof is against

    @property
    def subject_hash(self) -> str:
        return str(self.claims["subject_hash"])

    @property
    def index(self) -> int:
        return self.proof.index

    def to_json(self) -> str:
        doc = {
            "certificate": self.claims,
            "signature": base64.b64encode(self.signature).decode(),
            "record": self.record.decode(),
            "proof": self.proof.to_dict(),
            "checkpoint": self.checkpoint,
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Certificate:
        """Strictly parse a certificate document; anything malformed is an integrity failure."""
        if len(text) > MAX_CERT_BYTES:
            raise AuditIntegrityError("certificate: document too large")
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise AuditIntegrityError("certificate: not valid JSON") from None
        if not isinstance(doc, dict) or set(doc) != _DOC:
            raise AuditIntegrityError("certificate: expected exactly the fields " + ", ".join(sorted(_DOC)))
        claims, sig, record, checkpoint = (
            doc["certificate"],
            doc["signature"],
            doc["record"],
            doc["checkpoint"],
        )
        if not isinstance(claims, dict) or set(claims) != _CLAIMS:
            raise AuditIntegrityError("certificate: claims do not have the expected fields")
        if not all(isinstance(v, str) for v in (sig, record, checkpoint)):
            raise AuditIntegrityError("certificate: signature, record and checkpoint must be strings")
        try:
            signature = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise AuditIntegrityError("certificate: signature is not base64") from None
        return cls(claims, signature, record.encode(), InclusionProof.from_dict(doc["proof"]), checkpoint)


@dataclass(frozen=True)
class CertificateCheck:
    subject_hash: str
    index: int
    checkpoint_size: int
    later_checkpoint_size: int | None  # a later checkpoint shown consistent with the certificate's
    log_size: int | None  # the local log shown to still extend the certificate's checkpoint


def _canonical(claims: Mapping[str, Any]) -> bytes:
    return orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)


def _field(receipt: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in receipt:
            return receipt[name]
    return default


def _time(value: object, path: str) -> str:
    try:
        if isinstance(value, datetime):
            return format_time((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
        if isinstance(value, int | float) and not isinstance(value, bool):
            return format_time(float(value))
    except (OverflowError, ValueError, OSError):
        raise ValidationError(f"erasure {path} is out of range", path=path, rule="time") from None
    if isinstance(value, str):
        try:
            return check_time(value, path)
        except ValidationError:
            try:
                return _time(datetime.fromisoformat(value), path)
            except ValueError:
                pass
    raise ValidationError(f"erasure {path} must be a time", path=path, rule="time")


def _count(value: object, path: str) -> int | dict[str, int]:
    if isinstance(value, Mapping):
        return {_cls(k, path): _count_int(v, f"{path}.{k}") for k, v in value.items()}
    return _count_int(value, path)


def _count_int(value: object, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValidationError(f"erasure {path} must be a non-negative integer", path=path, rule="count")
    return value


def _cls(value: object, path: str) -> str:
    if not isinstance(value, str) or not _CLASS.match(value):
        raise ValidationError(f"erasure {path} names an invalid sensitivity class", path=path, rule="class")
    return value


def _flag(value: object) -> bool | None:
    """Whether wrapped bytes left every store file (None: the receipt does not say)."""
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError("erasure purged must be true, false or absent", path="purged", rule="type")


def _epochs(value: object) -> int | dict[str, int | str]:
    if not isinstance(value, Mapping):
        return _count_int(value, "kek_epochs")
    out: dict[str, int | str] = {}
    for k, v in value.items():
        path = f"kek_epochs.{_cls(k, 'kek_epochs')}"
        if isinstance(v, str) and _EPOCH.match(v):
            out[k] = v
        else:
            out[k] = _count_int(v, path)
    return out


def erasure_claims(
    origin: str, receipt: Mapping[str, Any] | object | None = None, **fields: Any
) -> dict[str, Any]:
    """Normalize an ErasureReceipt (mapping, dataclass or kwargs) into certificate claims.

    Only the known fields are read; anything else on the receipt is ignored, never copied.
    """
    if receipt is not None and not isinstance(receipt, Mapping):
        receipt = {n: getattr(receipt, n) for n in _RECEIPT_FIELDS if hasattr(receipt, n)}
    src: dict[str, Any] = {**(receipt or {}), **fields}  # type: ignore[dict-item]
    subject_hash = check_meta({"subject_hash": _field(src, "subject_hash")})["subject_hash"]
    classes = _field(src, "classes", default=())
    if isinstance(classes, str) or not isinstance(classes, Iterable):
        raise ValidationError("erasure classes must be a list of class names", path="classes", rule="type")
    classes = sorted({_cls(c, "classes") for c in classes})
    if len(classes) > 64:
        raise ValidationError("erasure names more than 64 classes", path="classes", rule="max_items")
    reason = _field(src, "reason_code", default="erasure_request")
    if not isinstance(reason, str) or not _REASON.match(reason):
        raise ValidationError("erasure reason_code must be a short code", path="reason_code", rule="code")
    return {
        "type": CERT_TYPE,
        "log": origin,
        "subject_hash": subject_hash,
        "erased_at": _time(_field(src, "time", "erased_at"), "time"),
        "classes": classes,
        "dek_versions_destroyed": _count(
            _field(src, "dek_versions_destroyed", "destroyed", "deks_destroyed", default=0),
            "dek_versions_destroyed",
        ),
        "kek_epochs": _epochs(_field(src, "kek_epochs", default={})),
        "reason_code": reason,
        "purged": _flag(_field(src, "purged")),
        "issued_at": format_time(),
    }


def issue_erasure_certificate(
    log: AuditLog,
    receipt: Mapping[str, Any] | object | None = None,
    *,
    principal: str = "eventward.keys",
    **fields: Any,
) -> Certificate:
    """Sign the claims, log an ``erasure.certificate`` record, checkpoint, prove, and keep it.

    Not one transaction: if the process dies after the record is appended, the erasure is
    still in the log (the certificate can be issued again; the newest is the one shown).
    """
    claims = erasure_claims(log.verifier.name, receipt, **fields)
    body = _canonical(claims)
    signature = log.sign_statement(KIND, body)
    destroyed = claims["dek_versions_destroyed"]
    (index,) = log.append_many(
        [
            {
                "action": ACTION,
                "principal": principal,
                "resource": f"Subject::{claims['subject_hash']}",
                "reason": claims["reason_code"],
                "meta": {
                    "subject_hash": claims["subject_hash"],
                    "certificate_sha256": hashlib.sha256(body).hexdigest(),
                    "classes": len(claims["classes"]),
                    "dek_versions_destroyed": destroyed
                    if isinstance(destroyed, int)
                    else sum(destroyed.values()),
                },
            }
        ]
    )
    cp = log.checkpoint()
    cert = Certificate(claims, signature, log.get(index).body, log.prove(index, cp.size), cp.text)
    log.attach(KIND, claims["subject_hash"], index, cert.to_json())
    return cert


def find_certificate(log: AuditLog, subject_hash: str) -> Certificate:
    """The newest certificate issued for ``subject_hash`` (as stored: verify before trusting)."""
    docs = log.attachments(KIND, subject_hash)
    if not docs:
        raise NotFoundError("no erasure certificate for that subject hash")
    return Certificate.from_json(docs[-1][1])


def verify_certificate(
    cert: Certificate | str,
    public_key: PublicKeyLike,
    *,
    log: AuditLog | None = None,
    checkpoint: str | None = None,
) -> CertificateCheck:
    """Check signature, announcing record, inclusion proof and checkpoint; raise AuditIntegrityError.

    With ``checkpoint`` (a later published checkpoint) and/or ``log`` (the live log), also
    check that they extend the certificate's checkpoint: no rollback, no fork.
    """
    verifier = AuditVerifier.of(public_key)
    if isinstance(cert, str):
        cert = Certificate.from_json(cert)
    claims = cert.claims
    if claims.get("type") != CERT_TYPE or claims.get("log") != verifier.name:
        raise AuditIntegrityError("certificate: not an erasure certificate of this audit log")
    body = _canonical(claims)
    verifier.verify(statement(KIND, body), cert.signature, "erasure certificate")
    record = decode(cert.record, cert.proof.index)
    meta = record.meta
    if (
        record.action != ACTION
        or meta.get("certificate_sha256") != hashlib.sha256(body).hexdigest()
        or meta.get("subject_hash") != claims["subject_hash"]
    ):
        raise AuditIntegrityError(
            "certificate: the audit record does not announce these claims", index=record.index
        )
    cp = verify_checkpoint(cert.checkpoint, verifier)
    verify_inclusion_proof(cert.proof, cp, record=cert.record)
    later_size = log_size = None
    later = verify_checkpoint(checkpoint, verifier) if checkpoint is not None else None
    if later is not None:
        if later.size < cp.size:
            raise AuditIntegrityError(f"rollback: checkpoint of size {later.size} predates the certificate's")
        if log is None and later.size == cp.size and later.root != cp.root:
            raise AuditIntegrityError("fork: two signed checkpoints of one size with different roots")
        later_size = later.size if log is not None or later.size == cp.size else None
    if log is not None:
        log_size = log.size()
        if log_size < cp.size:
            raise AuditIntegrityError(
                f"rollback: the log has {log_size} records, the certificate's checkpoint {cp.size}",
                index=log_size,
            )
        verify_consistency_proof(log.consistency(cp.size, log_size), cp, log.root(log_size))
        if later is not None:
            if later.size > log_size:
                raise AuditIntegrityError(
                    f"rollback: the log has {log_size} records, the checkpoint {later.size}"
                )
            verify_consistency_proof(log.consistency(cp.size, later.size), cp, later)
    return CertificateCheck(cert.subject_hash, cert.index, cp.size, later_size, log_size)
