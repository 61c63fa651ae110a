"""What the SDK needs from its collaborators, as small protocols, and what it hands back.

Producer and Consumer depend on these shapes only, so the schema registry, the field
encryptor and the transports can be swapped (or faked in tests) without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from eventward._internal.fieldspec import FieldSpec


class SchemaVersionLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def spec(self) -> FieldSpec: ...

    @property
    def max_event_bytes(self) -> int: ...

    def validate(self, data: Any) -> None:
        """Raise ValidationError (naming path and rule) if ``data`` breaks the schema."""
        ...


class SchemaSource(Protocol):
    def active(self, type_: str) -> SchemaVersionLike: ...

    def get(self, type_: str, version: int) -> SchemaVersionLike: ...


class FieldCipher(Protocol):
    """crypto.fields.FieldEncryptor."""

    def encrypt(
        self,
        event_id: str,
        data: dict[str, Any],
        spec: FieldSpec,
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
    ) -> tuple[dict[str, Any], str | None]: ...

    def decrypt(
        self,
        event_id: str,
        data: dict[str, Any],
        spec: FieldSpec,
        subject_hash: str | None,
        *,
        principal: str,
        uncleared: Literal["redact", "token"] = "redact",
        topic: str | None = None,
        event_type: str | None = None,
    ) -> tuple[dict[str, Any], Any]: ...


@dataclass(frozen=True)
class Delivered:
    """One verified, decrypted event as a handler sees it. ``data`` is kept out of the repr."""

    id: str
    type: str
    source: str
    time: str
    attributes: dict[str, Any] = field(repr=False)  # every envelope attribute except data
    data: Any = field(repr=False)
    stream: str = ""
    offset: int = 0
    producer: str = ""
    seq: int = 0
    batch: str = ""
    sealed_at: float = 0.0
    verified: bool = True
    report: Any = field(default=None, repr=False)  # the decryptor's DecryptReport (counts only)

    def to_json(self) -> dict[str, Any]:
        """The CloudEvent as this principal may see it (decrypted per clearance)."""
        return {**self.attributes, "data": self.data}


@dataclass
class RunStats:
    """What a consume/replay/redrive run did: counts and reason codes only."""

    delivered: int = 0
    redelivered: int = 0  # already handled before a crash; skipped
    dead_lettered: int = 0
    skipped: int = 0  # of an event type the consumer did not ask for (types=): left for others
    refused: dict[str, int] = field(default_factory=dict)  # reason code -> count
    gaps: int = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
