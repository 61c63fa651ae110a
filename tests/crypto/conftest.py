"""Fixtures for field-token and field-encryptor tests: an in-memory key source and wrappers
that fail or count, so attacks can be aimed at the encryptor alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT, AllowList
from eventward.errors import KMSUnavailable

# The benchmark workload (bench/workload.py) is checked here too; bench/ lives at the repo root,
# which `python -m bench...` has on its path and a bare `pytest` does not.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

# Values that must never show up in errors, reprs or encrypted output.
SENTINEL = "SENTINEL-4242-do-not-leak"

SPEC = FieldSpec.from_dict(
    {
        "subject": "customer.id",
        "fields": {
            "customer.name": "pii",
            "customer.email": "pii",
            "customer.phone": "pii",
            "payment.card": "payment",
            "payment.holder": "payment",
            "items[].note": "pii",
            "customer.email_lookup": {"class": "pii", "deterministic": True},
        },
    }
)


def order(customer: str = "alice", **over: object) -> dict:
    data = {
        "order_id": "ord-1",
        "customer": {
            "id": customer,
            "name": f"{customer} Liddell",
            "email": f"{customer}@example.com",
            "phone": "+1-555-0100",
            "email_lookup": f"{customer}@example.com",
            "tier": "gold",
        },
        "payment": {"card": "4111111111111111", "holder": f"{customer} L", "amount": 1299},
        "items": [{"sku": "SKU-1", "note": "gift wrap"}, {"sku": "SKU-2", "note": None}, {"sku": "SKU-3"}],
        "total": 12.5,
    }
    data.update(over)
    return data


class FailingKeys:
    """A key source whose KMS is down, optionally only for some classes or operations."""

    def __init__(self, inner: MemoryKeys, *, fail_classes: frozenset[str] | None = None,
                 encrypt: bool = True, decrypt: bool = True) -> None:
        self.inner = inner
        self.fail_classes = fail_classes
        self.encrypt, self.decrypt = encrypt, decrypt

    def _fails(self, cls: str) -> bool:
        return self.fail_classes is None or cls in self.fail_classes

    def subject_hash(self, subject: str) -> str:
        return self.inner.subject_hash(subject)

    def encryption_key(self, subject, cls, *, principal):
        if self.encrypt and self._fails(cls):
            raise KMSUnavailable("kms is unreachable")
        return self.inner.encryption_key(subject, cls, principal=principal)

    def decryption_key(self, kid, cls, *, principal):
        if self.decrypt and self._fails(cls):
            raise KMSUnavailable("kms is unreachable")
        return self.inner.decryption_key(kid, cls, principal=principal)


class CountingKeys:
    """Counts key-source calls, to hold the encryptor to one call per key per event."""

    def __init__(self, inner: MemoryKeys) -> None:
        self.inner = inner
        self.enc_calls: list[tuple[object, str]] = []
        self.dec_calls: list[tuple[str, str]] = []

    def subject_hash(self, subject: str) -> str:
        return self.inner.subject_hash(subject)

    def encryption_key(self, subject, cls, *, principal):
        self.enc_calls.append((subject, cls))
        return self.inner.encryption_key(subject, cls, principal=principal)

    def decryption_key(self, kid, cls, *, principal):
        self.dec_calls.append((kid, cls))
        return self.inner.decryption_key(kid, cls, principal=principal)


@pytest.fixture
def auth() -> AllowList:
    """Deny by default; 'reader' is cleared for pii and payment, 'support' for pii only."""
    a = AllowList()
    a.grant("reader", DECRYPT, ("Class", "pii"))
    a.grant("reader", DECRYPT, ("Class", "payment"))
    a.grant("support", DECRYPT, ("Class", "pii"))
    return a


@pytest.fixture
def keys(auth: AllowList) -> MemoryKeys:
    return MemoryKeys(auth)


@pytest.fixture
def enc(keys: MemoryKeys) -> FieldEncryptor:
    return FieldEncryptor(keys)
