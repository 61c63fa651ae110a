"""Tamper-evident audit log: RFC 6962 Merkle tree, signed checkpoints, proofs, erasure certificates.

Every component imports the seam ``eventward.audit.base``, so that import must stay cheap and
cycle-free: the log, verifiers and certificates are exported lazily
(``from eventward.audit import AuditLog`` loads them).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "AuditLog": "eventward.audit.log",
    "AuditRecord": "eventward.audit.records",
    "AuditVerifier": "eventward.audit.signing",
    "Certificate": "eventward.audit.certificate",
    "CertificateCheck": "eventward.audit.certificate",
    "find_certificate": "eventward.audit.certificate",
    "issue_erasure_certificate": "eventward.audit.certificate",
    "verify_certificate": "eventward.audit.certificate",
    "Checkpoint": "eventward.audit.checkpoint",
    "verify_checkpoint": "eventward.audit.checkpoint",
    "ConsistencyProof": "eventward.audit.tree",
    "InclusionProof": "eventward.audit.tree",
    "VerifyReport": "eventward.audit.verify",
    "verify_consistency_proof": "eventward.audit.verify",
    "verify_inclusion_proof": "eventward.audit.verify",
    "verify_log": "eventward.audit.verify",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eventward.audit' has no attribute {name!r}")
