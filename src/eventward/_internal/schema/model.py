"""What the registry hands out: findings, check reports, proposals and schema versions.

Everything here is metadata (paths, kinds, versions, fingerprints), safe for logs, audit
records and HTTP responses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eventward._internal.fieldspec import FieldSpec
from eventward._internal.schema.compiled import CompiledSchema
from eventward.errors import SchemaError


class Mode(StrEnum):
    """Compatibility mode of a subject. Backward: the new schema reads data written under the
    old; forward: the old reads the new; full: both. Transitive: against every accepted
    version, not only the active one."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        try:
            return cls(str(value).upper())
        except ValueError:
            raise SchemaError(
                f"unknown compatibility mode {str(value)[:30]!r} (use {', '.join(cls)})"
            ) from None

    @property
    def backward(self) -> bool:
        return self.name.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.name.startswith(("FORWARD", "FULL"))

    @property
    def transitive(self) -> bool:
        return self.name.endswith("TRANSITIVE")


DEFAULT_MODE = Mode.BACKWARD


class State(StrEnum):
    PROPOSED = "proposed"
    ACTIVE = "active"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Finding:
    """One incompatibility or security regression: where, what kind, and a value-free message.

    ``direction`` is "backward" or "forward" for compatibility findings and "" for security
    ones; ``against`` is the version compared with.
    """

    path: str
    kind: str
    message: str
    direction: str = ""
    against: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "message": self.message,
            "direction": self.direction,
            "against": self.against,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["path"], d["kind"], d["message"], d.get("direction", ""), d.get("against"))

    def __str__(self) -> str:
        ctx = " ".join(x for x in (self.direction, f"vs v{self.against}" if self.against else "") if x)
        return f"{self.path}: {self.kind}" + (f" [{ctx}]" if ctx else "") + f": {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """The result of checking a document against a subject: compatibility and security."""

    type: str
    fmt: str
    fingerprint: str
    mode: Mode
    compared: tuple[int, ...] = ()  # versions checked for compatibility
    compatibility: tuple[Finding, ...] = ()
    security: tuple[Finding, ...] = ()
    baseline: int | None = None  # the active version the security check compared with

    @property
    def compatible(self) -> bool:
        return not self.compatibility

    @property
    def needs_security_approval(self) -> bool:
        return bool(self.security)

    def kinds(self) -> str:
        """Finding kinds as one comma-separated string (for audit metadata)."""
        return ",".join(sorted({f.kind for f in (*self.compatibility, *self.security)}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "fmt": self.fmt,
            "fingerprint": self.fingerprint,
            "mode": str(self.mode),
            "compared": list(self.compared),
            "baseline": self.baseline,
            "compatibility": [f.to_dict() for f in self.compatibility],
            "security": [f.to_dict() for f in self.security],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckReport:
        return cls(
            d["type"],
            d["fmt"],
            d["fingerprint"],
            Mode.parse(d["mode"]),
            tuple(d.get("compared", ())),
            tuple(Finding.from_dict(f) for f in d.get("compatibility", ())),
            tuple(Finding.from_dict(f) for f in d.get("security", ())),
            d.get("baseline"),
        )


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One immutable, numbered version of a subject's schema, with its compiled validator."""

    type: str
    version: int
    state: State
    proposer: str
    created_at: float
    report: CheckReport
    approvals: tuple[tuple[str, str], ...]  # (kind, principal): kind is "schema" or "security"
    compiled: CompiledSchema = field(repr=False)

    @property
    def fmt(self) -> str:
        return self.compiled.fmt

    @property
    def fingerprint(self) -> str:
        return self.compiled.fingerprint

    @property
    def document(self) -> dict[str, Any]:
        """The parsed document as submitted (shared: treat as read-only)."""
        return self.compiled.document

    @property
    def spec(self) -> FieldSpec:
        return self.compiled.spec

    @property
    def max_event_bytes(self) -> int:
        return self.compiled.max_event_bytes

    @property
    def security_findings(self) -> tuple[Finding, ...]:
        return self.report.security

    @property
    def needs_security_approval(self) -> bool:
        return self.report.needs_security_approval

    def approved(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.approvals)

    def validate(self, data: Any) -> None:
        """Validate plaintext event data (producer side, before encryption): ValidationError
        naming the path and rule, never the value."""
        self.compiled.validate(data)

    def validate_many(self, events: Iterable[Any]) -> None:
        """``validate`` of each event in order (a producer's ``send_many``): the first invalid
        one raises its ValidationError."""
        self.compiled.validate_many(events)


@dataclass(frozen=True)
class Proposal:
    """What ``propose`` returns: the new version number and everything its checks found."""

    type: str
    version: int
    fingerprint: str
    proposer: str
    report: CheckReport

    @property
    def needs_security_approval(self) -> bool:
        return self.report.needs_security_approval


@dataclass(frozen=True)
class SubjectInfo:
    """One line of ``list()``."""

    type: str
    mode: Mode
    active: int | None
    pending: int | None
    versions: int
    fmt: str | None
    fingerprint: str | None
