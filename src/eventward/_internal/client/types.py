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


class Delivered(tuple):
    """One verified, decrypted event as a handler sees it. ``data`` is kept out of the repr.

    Immutable: a tuple underneath, so a consumer makes one per event with a single allocation
    (a frozen dataclass set 14 attributes one by one, and the attribute dict was copied from
    the envelope for every event). ``attributes`` (every envelope attribute except data) is
    built from the envelope on first access and then kept."""

    __slots__ = ()

    def __new__(
        cls,
        id: str,
        type: str,
        source: str,
        time: str,
        attributes: dict[str, Any],
        data: Any,
        stream: str = "",
        offset: int = 0,
        producer: str = "",
        seq: int = 0,
        batch: str = "",
        sealed_at: float = 0.0,
        verified: bool = True,
        report: Any = None,
    ) -> Delivered:
        return tuple.__new__(cls, (id, type, source, time, [attributes, True], data, stream, offset, producer, seq,
                                   batch, sealed_at, verified, report))

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickle/copy call __new__ with the public arguments
        return (*self[:4], self.attributes, *self[5:])

    def __repr__(self) -> str:
        return (f"Delivered(id={self[0]!r}, type={self[1]!r}, source={self[2]!r}, time={self[3]!r}, "
                f"stream={self[6]!r}, offset={self[7]!r}, producer={self[8]!r}, seq={self[9]!r}, "
                f"batch={self[10]!r}, sealed_at={self[11]!r}, verified={self[12]!r})")

    @property
    def id(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return self[1]  # type: ignore[no-any-return]

    @property
    def source(self) -> str:
        return self[2]  # type: ignore[no-any-return]

    @property
    def time(self) -> str:
        return self[3]  # type: ignore[no-any-return]

    @property
    def attributes(self) -> dict[str, Any]:
        """Every envelope attribute except data."""
        cell = self[4]
        if not cell[1]:  # made by the consumer from the whole envelope: data left out once, here
            cell[0] = {k: v for k, v in cell[0].items() if k != "data"}
            cell[1] = True
        return cell[0]  # type: ignore[no-any-return]

    @property
    def data(self) -> Any:
        return self[5]

    @property
    def stream(self) -> str:
        return self[6]  # type: ignore[no-any-return]

    @property
    def offset(self) -> int:
        return self[7]  # type: ignore[no-any-return]

    @property
    def producer(self) -> str:
        return self[8]  # type: ignore[no-any-return]

    @property
    def seq(self) -> int:
        return self[9]  # type: ignore[no-any-return]

    @property
    def batch(self) -> str:
        return self[10]  # type: ignore[no-any-return]

    @property
    def sealed_at(self) -> float:
        return self[11]  # type: ignore[no-any-return]

    @property
    def verified(self) -> bool:
        return self[12]  # type: ignore[no-any-return]

    @property
    def report(self) -> Any:
        """The decryptor's DecryptReport (counts only)."""
        return self[13]

    def to_json(self) -> dict[str, Any]:
        """The CloudEvent as this principal may see it (decrypted per clearance)."""
        return {**self.attributes, "data": self[5]}


_tuple_new = tuple.__new__


def delivered_from_envelope(env: dict[str, Any], data: Any, stream: str, offset: int, producer: str, seq: int,
                            batch: str, sealed_at: float, report: Any) -> Delivered:
    """The consumer's Delivered of a verified envelope: one allocation; the attributes are left
    in ``env`` until a handler asks for them (``env`` is not touched afterwards)."""
    return _tuple_new(Delivered, (env["id"], env["type"], env["source"], env.get("time", ""), [env, False], data,
                                  stream, offset, producer, seq, batch, sealed_at, True, report))


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
