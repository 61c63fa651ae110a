"""One typed error hierarchy for all of eventward.

Every error names the problem (a path, a rule, a key id, a reason code) and never carries
field values, key bytes or raw data-subject ids: messages end up in logs, HTTP problem
details and audit records. Callers catch by category (``SecurityError``, ``KeyError_``...)
and map ``code`` to HTTP statuses or reason codes without parsing messages.
"""

from __future__ import annotations


class EventwardError(Exception):
    """Root of every error eventward raises on purpose."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        # Details are metadata only (paths, ids, counts); never values.
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --- input and configuration -------------------------------------------------------------


class ConfigError(EventwardError):
    code = "config"
    http_status = 500


class InputError(EventwardError):
    """The caller sent something malformed."""

    code = "bad_input"
    http_status = 400


class EnvelopeError(InputError):
    code = "bad_envelope"


class OversizeError(InputError):
    code = "oversize"
    http_status = 413


class FieldSpecError(InputError):
    code = "bad_field_spec"


class ValidationError(InputError):
    """An event does not satisfy its schema; ``path`` and ``rule`` name where and why."""

    code = "validation"
    http_status = 422

    def __init__(self, message: str, path: str = "", rule: str = "", **details: object) -> None:
        super().__init__(message, path=path, rule=rule, **details)
        self.path = path
        self.rule = rule


class NotFoundError(EventwardError):
    code = "not_found"
    http_status = 404


class ConflictError(EventwardError):
    code = "conflict"
    http_status = 409


class SchemaError(InputError):
    """A schema document is malformed or uses something the registry cannot reason about."""

    code = "bad_schema"
    http_status = 422


class SchemaIncompatible(ConflictError):
    """A schema change breaks the subject's compatibility mode; ``findings`` lists every break."""

    code = "incompatible_schema"

    def __init__(self, message: str, findings: tuple[object, ...] = (), **details: object) -> None:
        super().__init__(message, **details)
        self.findings = findings


class PolicyError(InputError):
    """A policy file or Cedar policy is invalid; ``path`` names the YAML key, file or policy id."""

    code = "bad_policy"
    http_status = 422

    def __init__(self, message: str, path: str = "", **details: object) -> None:
        super().__init__(message, path=path, **details)
        self.path = path


class RequestTimeout(InputError):
    """A client sent its request too slowly (slowloris); the connection is cut."""

    code = "request_timeout"
    http_status = 408


class UnsupportedMediaType(InputError):
    """A request body in a content type or content coding the gateway does not accept."""

    code = "unsupported_media_type"
    http_status = 415


class NotInClientMode(InputError):
    """The CLI runs against a control plane (``--connect``/``--profile``) and was given a command or
    option that only exists on a home (``--as``, ``--home``, a command the control API does not offer)."""

    code = "not_in_client_mode"


# --- security --------------------------------------------------------------------------------


class SecurityError(EventwardError):
    """Something that must be refused because trusting it would be unsafe."""

    code = "security"
    http_status = 403


class AuthenticationError(SecurityError):
    code = "unauthenticated"
    http_status = 401


class AccessDenied(SecurityError):
    """Deny by default. ``explanation`` says which policy decided and what grant is missing."""

    code = "forbidden"
    http_status = 403

    def __init__(self, message: str, explanation: object | None = None, **details: object) -> None:
        super().__init__(message, **details)
        self.explanation = explanation


class SeparationOfDuties(AccessDenied):
    """One principal tried to hold two roles of one change (e.g. schema and security approval)."""

    code = "separation_of_duties"


class TokenError(SecurityError):
    """A field token is malformed, was tampered with, or was moved to another context."""

    code = "bad_token"


class SealError(SecurityError):
    """A sealed batch or an event in it failed verification."""

    code = "bad_seal"

    def __init__(self, message: str, reason: str = "bad_seal", **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class ReplayError(SecurityError):
    """A duplicate, out-of-order or stale event."""

    code = "replay"

    def __init__(self, message: str, reason: str = "replay", **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class SchemaSecurityError(SecurityError):
    """A schema is unsafe to register (ReDoS, $ref cycle, too deep or too big)."""

    code = "unsafe_schema"
    http_status = 422


class ApprovalRequired(SecurityError):
    """A schema change weakens security and needs explicit security approval."""

    code = "security_approval_required"
    http_status = 409


class AuditIntegrityError(SecurityError):
    """The audit log or a proof does not verify; ``index`` names the first bad record."""

    code = "audit_integrity"

    def __init__(self, message: str, index: int | None = None, **details: object) -> None:
        super().__init__(message, index=index, **details)
        self.index = index


class AuditRollback(AuditIntegrityError):
    """A served or stored audit tree is smaller than a checkpoint this party verified before:
    records were removed, or the log was restored from an older copy."""

    code = "audit_rollback"


class AuditFork(AuditIntegrityError):
    """An audit tree does not extend a checkpoint this party verified before (another history at
    the same size, or a consistency proof that fails): the log was rewritten."""

    code = "audit_fork"


class QuotaExceeded(SecurityError):
    code = "quota"
    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0, **details: object) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class SensitiveDataRefused(SecurityError):
    """The producer guard (``block``) found PII or a secret in a field the schema does not tag.

    ``findings`` lists (field path, kind) pairs; the value is never carried."""

    code = "untagged_sensitive_data"
    http_status = 422

    def __init__(self, message: str, findings: tuple[tuple[str, str], ...] = (), **details: object) -> None:
        super().__init__(message, findings=findings, **details)
        self.findings = findings


class RedactionError(SecurityError):
    """A redaction pipeline's transform failed on an event: nothing of it is emitted."""

    code = "redaction_failed"
    http_status = 422


# --- keys --------------------------------------------------------------------------------------


class KeyServiceError(EventwardError):
    """The KMS or key store cannot answer. Fail closed: nothing is emitted in plaintext."""

    code = "key_service"
    http_status = 503


class KMSUnavailable(KeyServiceError):
    code = "kms_unavailable"


class ControlPlaneUnavailable(KMSUnavailable):
    """Client mode: no control-plane replica answered. Nothing was sent, nothing is skipped."""

    code = "control_plane_unavailable"


class KeyStoreUnavailable(KeyServiceError):
    code = "keystore_unavailable"


class KeyNotFound(KeyServiceError):
    code = "key_not_found"
    http_status = 404


class KeyDestroyed(KeyServiceError):
    """The key was destroyed (rotation or crypto-shredding); the data is unrecoverable."""

    code = "key_destroyed"
    http_status = 410


class KeyIntegrityError(KeyServiceError):
    """A wrapped key, the keyring or the erasure ledger failed authentication: tampered or moved."""

    code = "key_integrity"


class CASignatureInvalid(KeyIntegrityError):
    """The CA key (file, token or KMS) answered a signature that does not verify under the CA
    certificate (garbage, or another key): nothing was issued or published."""

    code = "ca_signature_invalid"


class LegalHoldError(ConflictError):
    """A subject under legal hold cannot be forgotten."""

    code = "legal_hold"


class KeyFilePermissionError(ConfigError):
    code = "key_file_permissions"


# --- transport -------------------------------------------------------------------------------


class TransportError(EventwardError):
    code = "transport"
    http_status = 503


class TransportUnavailable(TransportError):
    code = "transport_unavailable"


class CorruptedMessage(TransportError):
    """A stored message is not an eventward batch (foreign or altered): readers stop there, never
    skip it; listings report it and carry on with the other streams."""


# --- audit -------------------------------------------------------------------------------------


class AuditUnavailable(EventwardError):
    """The audit log cannot be written or read. Fail closed: audited work must not proceed silently."""

    code = "audit_unavailable"
    http_status = 503


class WitnessRefused(AuditIntegrityError):
    """A witness will not cosign: the checkpoint rolls back, forks or is not proven consistent
    with the last one it cosigned."""

    code = "witness_refused"


class TimestampError(SecurityError):
    """An RFC 3161 timestamp token does not verify, or the timestamp authority cannot answer."""

    code = "timestamp"


# --- control-plane database ---------------------------------------------------------------------


class StoreUnavailable(EventwardError):
    """The control-plane database (PostgreSQL) cannot be reached or failed a statement. Fail closed."""

    code = "store_unavailable"
    http_status = 503


class StoreNotReady(ConfigError):
    """The database has no eventward schema, an older one (run ``eventward db migrate``) or a
    newer one (upgrade eventward): refused at start, the message says what to run."""

    code = "store_not_ready"


class StoreForeignDeployment(ConfigError):
    """The database belongs to another deployment (its recorded deployment id differs)."""

    code = "store_foreign_deployment"


# --- backup and restore --------------------------------------------------------------------------


class RestoreRefused(SecurityError):
    """A backup cannot be restored without resurrecting erased data or rolling back key material:
    another deployment's, older than the anchored key state, or wrapped under destroyed KEKs."""

    code = "restore_refused"
    http_status = 409
