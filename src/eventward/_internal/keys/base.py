"""Seams of the key hierarchy: the KMS that holds KEKs and the store of wrapped DEKs.

KEKs (one per sensitivity class, versioned) never leave the KMS. DEKs are per
(data subject, class, version), random 256-bit, and only ever stored wrapped.
"""

from __future__ import annotations

from typing import Protocol


class DekSource(Protocol):
    """What field encryption needs from the key service (implemented by keys.service.KeyService,
    and in client mode by control.client.RemoteKeys). Every method may raise KeyServiceError
    (KMSUnavailable, KeyStoreUnavailable, ControlPlaneUnavailable): fail closed, nothing is sent or
    delivered in clear; the caller stops and retries later. Thread-safe."""

    def subject_hash(self, subject: str) -> str:
        """The stored form of a raw data-subject id (its pseudonym; a keyed hash in stores made
        before pseudonyms), the only form that may be stored or logged; made on first use, so it
        changes after ``forget``. InputError for an empty, oversize or non-text id."""
        ...

    def encryption_key(self, subject: str | None, cls: str, *, principal: str) -> tuple[str, bytes]:
        """(key id, DEK) for new data: the subject's current DEK of ``cls`` (created on first use),
        or, when ``subject`` is None, the class DEK (rotated after N events or T seconds).

        Raises AccessDenied when ``principal`` may not Encrypt ``cls`` (nothing is created),
        InputError for a malformed class name.
        """
        ...

    def decryption_key(self, kid: str, cls: str, *, principal: str) -> bytes:
        """The DEK named by ``kid``, if ``principal`` is cleared to Decrypt ``cls``.

        Raises AccessDenied (not cleared), KeyDestroyed (crypto-shredded or its KEK destroyed),
        KeyNotFound (never existed: a forged key id), KeyServiceError (KMS/store unavailable).
        """
        ...


class ContextualDekSource(DekSource, Protocol):
    """A DekSource that authorizes key releases per topic and event type and counts nonces
    (``takes_context = True``; implemented by KeyService). FieldEncryptor calls it with:

    ``encryption_key(subject, cls, *, principal, topic, event_type, nonces)`` and
    ``decryption_key(kid, cls, *, principal, topic, event_type, subject_hash)``.
    """

    takes_context: bool
