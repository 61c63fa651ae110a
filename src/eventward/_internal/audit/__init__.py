"""Tamper-evident audit log: RFC 6962 Merkle tree, signed checkpoints, proofs, erasure certificates.

Every component imports the seam ``eventward._internal.audit.base``, so that import must stay cheap and
cycle-free: the log, verifiers and certificates are exported lazily
(``from eventward._internal.audit import AuditLog`` loads them).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "AuditLog": "eventward._internal.audit.log",
    "AuditRecord": "eventward._internal.audit.records",
    "AuditVerifier": "eventward._internal.audit.signing",
    "Certificate": "eventward._internal.audit.certificate",
    "CertificateCheck": "eventward._internal.audit.certificate",
    "find_certificate": "eventward._internal.audit.certificate",
    "issue_erasure_certificate": "eventward._internal.audit.certificate",
    "verify_certificate": "eventward._internal.audit.certificate",
    "Checkpoint": "eventward._internal.audit.checkpoint",
    "verify_checkpoint": "eventward._internal.audit.checkpoint",
    "ConsistencyProof": "eventward._internal.audit.tree",
    "InclusionProof": "eventward._internal.audit.tree",
    "VerifyReport": "eventward._internal.audit.verify",
    "verify_consistency_proof": "eventward._internal.audit.verify",
    "verify_inclusion_proof": "eventward._internal.audit.verify",
    "verify_log": "eventward._internal.audit.verify",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eventward._internal.audit' has no attribute {name!r}")
