"""The schema registry as a security boundary: change control over every event type's schema.

A change is proposed (authorized ProposeSchema; refused outright if unsafe, malformed or
incompatible under the subject's mode), then approved by a second principal (ApproveSchema;
the proposer can never approve their own change, including the first version). A change
with security findings (security.py) additionally needs an approval with ``security=True``
by a principal allowed ApproveSecurity who is neither the proposer nor the schema approver
(separation of duties: no one principal holds two of the three roles of one change); it
stays ``proposed`` until every needed approval is in. Only one proposal per subject is open
at a time, so every proposal was checked against the version it would replace; activation
re-checks compatibility under the current mode.

Reads (``get``, ``active``, ``list``, ``check``) are open to any caller of the library; the
gateway authorizes them. Every change and every refusal is audited (metadata only: type,
version, fingerprint, finding kinds, outcome).

Active versions are cached per process; a change counter in the database, read at most
every ``refresh_interval`` seconds, makes each instance notice activations by others.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from eventward._internal.audit.base import DENIED, ERROR, OK, AuditSink, MetaValue, NullAudit
from eventward._internal.config import Config
from eventward._internal.home import Home
from eventward._internal.policy import base as policy
from eventward._internal.policy.base import APPROVE_SCHEMA, APPROVE_SECURITY, PROPOSE_SCHEMA, Authorizer
from eventward._internal.schema import compat
from eventward._internal.schema.compiled import CompiledSchema, compile_schema
from eventward._internal.schema.document import FORMATS
from eventward._internal.schema.model import (
    DEFAULT_MODE,
    CheckReport,
    Mode,
    Proposal,
    SchemaVersion,
    State,
    SubjectInfo,
)
from eventward._internal.schema.security import regressions
from eventward._internal.schema.store import Row, Store
from eventward.errors import (
    AccessDenied,
    ConflictError,
    EventwardError,
    InputError,
    NotFoundError,
    SchemaIncompatible,
    SchemaSecurityError,
    SeparationOfDuties,
)

_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,254}\Z")
_PRINCIPAL = re.compile(r"[^\x00-\x1f\x7f]{1,256}\Z")
_MAX_KINDS_CHARS = 240
SCHEMA, SECURITY = "schema", "security"  # the two approval kinds, from two different principals
Document = bytes | bytearray | str | Mapping[str, Any]


def check_type(type_: str) -> str:
    """A CloudEvents ``type`` usable as a subject name."""
    if not isinstance(type_, str) or not _TYPE.match(type_):
        raise InputError(
            "event type must be 1..255 letters, digits or . _ : / - (starting with a letter or digit)"
        )
    return type_


def _check_principal(principal: str) -> str:
    if not isinstance(principal, str) or not _PRINCIPAL.match(principal):
        raise InputError("principal must be 1..256 characters without control characters")
    return principal


class Registry:
    """Versioned, governed schemas per event type, in one SQLite file shared across processes."""

    def __init__(
        self,
        path: Path | str | None,
        *,
        authorizer: Authorizer,
        audit: AuditSink | None = None,
        refresh_interval: float = 0.5,
        store: Any = None,
    ) -> None:
        """``store``: another backend's store (schema.pg_store) instead of the SQLite file at ``path``."""
        self._store: Any = store if store is not None else Store(path)  # type: ignore[arg-type]
        self._authorizer = authorizer
        self._audit: AuditSink = audit if audit is not None else NullAudit()
        self._interval = refresh_interval
        self._active: dict[str, SchemaVersion] = {}
        self._generation = -1
        self._checked_at = float("-inf")
        self._cache_lock = threading.Lock()

    @classmethod
    def open(cls, home: Home, *, authorizer: Authorizer, audit: AuditSink | None = None) -> Registry:
        if Config.load(home.config).store.backend == "postgres":  # the registry in the shared database
            from eventward._internal.schema.pg_store import open_pg_registry_store

            return cls(None, store=open_pg_registry_store(home), authorizer=authorizer, audit=audit)
        return cls(home.ensure().registry_db, authorizer=authorizer, audit=audit)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self._store.path)!r})"

    # --- change control ---------------------------------------------------------------------

    def propose(self, principal: str, type_: str, document: Document, fmt: str = "json") -> Proposal:
        """Record a new version as ``proposed`` after safety, compatibility and security checks.

        Raises AccessDenied, SchemaError / SchemaSecurityError (bad or unsafe document),
        SchemaIncompatible (``findings`` lists every break), ConflictError (a proposal is
        already open, or the document equals the active one).
        """
        _check_principal(principal)
        check_type(type_)
        self._authorize(principal, PROPOSE_SCHEMA, type_, "schema.propose")
        try:
            compiled = compile_schema(document, fmt)
        except EventwardError as e:
            shown = fmt if fmt in FORMATS else "unknown"
            self._record("schema.propose", principal, type_, ERROR, reason=e.code, fmt=shown)
            raise
        with self._store.write() as db:
            rows = Store.versions(db, type_)
            pending = next((r for r in rows if r.state == State.PROPOSED), None)
            if pending is not None and pending.proposer == principal and pending.fingerprint == compiled.fingerprint:
                # The same proposal again (a retry after an error that left the first committed, e.g.
                # a timed-out COMMIT on PostgreSQL): the same answer, not a second version or an error.
                earlier = [r for r in rows if r.version != pending.version]
                report = self._report(earlier, Store.mode(db, type_), type_, compiled)
                meta = _report_meta(report, pending.version)
                self._record("schema.propose", principal, type_, OK, repeated=True, **meta)
                return Proposal(type_, pending.version, pending.fingerprint, principal, report)
            if pending is not None:
                raise ConflictError(
                    f"{type_} v{pending.version} is awaiting approval; approve or reject it first"
                )
            active = next((r for r in rows if r.state == State.ACTIVE), None)
            if active is not None and active.fingerprint == compiled.fingerprint:
                raise ConflictError(f"{type_} v{active.version} already has this exact schema")
            report = self._report(rows, Store.mode(db, type_), type_, compiled)
            version = rows[-1].version + 1 if rows else 1
            meta = _report_meta(report, version)
            if not report.compatible:
                self._record("schema.propose", principal, type_, DENIED, reason="incompatible", **meta)
                raise SchemaIncompatible(_incompatible_message(type_, report), findings=report.compatibility)
            if Store.mode(db, type_) is None:
                Store.set_mode(db, type_, DEFAULT_MODE)
            Store.insert(
                db,
                Row(
                    type_,
                    version,
                    compiled.fmt,
                    compiled.raw,
                    compiled.fingerprint,
                    State.PROPOSED,
                    principal,
                    orjson.dumps(report.to_dict()).decode(),
                    time.time(),
                ),
            )
            self._record("schema.propose", principal, type_, OK, **meta)
        return Proposal(type_, version, compiled.fingerprint, principal, report)

    def approve(self, principal: str, type_: str, version: int, *, security: bool = False) -> SchemaVersion:
        """Give one approval of a proposed version; it activates once every needed one is in.

        ``security=False`` is the schema approval (ApproveSchema); ``security=True`` the security
        approval a change with security findings also needs (ApproveSecurity). The proposer may
        give neither, and no principal may give both for one version (SeparationOfDuties): a
        PII-tag removal needs three distinct people, never one admin holding two roles.
        """
        _check_principal(principal)
        check_type(type_)
        kind = SECURITY if security else SCHEMA
        self._authorize(principal, APPROVE_SECURITY if security else APPROVE_SCHEMA, type_, "schema.approve")
        with self._store.write() as db:
            row = self._proposed(db, type_, version)
            if principal == row.proposer:
                self._record(
                    "schema.approve", principal, type_, DENIED, reason="self_approval", version=version
                )
                raise AccessDenied(
                    f"{principal} proposed {type_} v{version}: a second principal must approve it"
                )
            other = SCHEMA if security else SECURITY
            if any(k == other and p == principal for k, p in Store.approvals(db, type_, version)):
                self._record(
                    "schema.approve", principal, type_, DENIED, reason="separation_of_duties", version=version
                )
                raise SeparationOfDuties(
                    f"{principal} gave the {other} approval of {type_} v{version}: "
                    f"the {kind} approval must come from another principal"
                )
            Store.approve(db, type_, version, kind, principal)
            # Recomputed, not read back: the mode may have changed since the proposal, and the
            # stored report is not covered by the fingerprint.
            fresh = self._report(Store.versions(db, type_), Store.mode(db, type_), type_, self._compiled(row))
            ready = approvals_complete(row.proposer, Store.approvals(db, type_, version), bool(fresh.security))
            if ready and not fresh.compatible:
                meta = _report_meta(fresh, version)
                self._record("schema.approve", principal, type_, DENIED, reason="incompatible", **meta)
                raise SchemaIncompatible(_incompatible_message(type_, fresh), findings=fresh.compatibility)
            self._record(
                "schema.approve",
                principal,
                type_,
                OK,
                version=version,
                fingerprint=row.fingerprint,
                security=security,
                activated=ready,
            )
            if ready:
                self._activate(db, principal, row)
            final = Store.row(db, type_, version)
            approvals = Store.approvals(db, type_, version)
        if ready:
            self._invalidate()
        assert final is not None
        return self._version(final, approvals)

    def reject(self, principal: str, type_: str, version: int) -> SchemaVersion:
        """Reject a proposed version (ApproveSchema), or withdraw one's own proposal."""
        _check_principal(principal)
        check_type(type_)
        with self._store.write() as db:
            row = self._proposed(db, type_, version)
            if principal != row.proposer:
                self._authorize(principal, APPROVE_SCHEMA, type_, "schema.reject")
            Store.set_state(db, type_, version, State.REJECTED, principal)
            self._record(
                "schema.reject",
                principal,
                type_,
                OK,
                version=version,
                fingerprint=row.fingerprint,
                withdrawn=principal == row.proposer,
            )
            final = Store.row(db, type_, version)
            approvals = Store.approvals(db, type_, version)
        assert final is not None
        return self._version(final, approvals)

    def set_mode(self, principal: str, type_: str, mode: str | Mode) -> Mode:
        """Set a subject's compatibility mode (ApproveSchema: a schema-admin decision)."""
        _check_principal(principal)
        check_type(type_)
        m = Mode.parse(mode)
        self._authorize(principal, APPROVE_SCHEMA, type_, "schema.mode")
        with self._store.write() as db:
            before = Store.mode(db, type_)
            Store.set_mode(db, type_, m)
            Store.bump(db)
            self._record("schema.mode", principal, type_, OK, mode=str(m), previous=before)
        return m

    # --- reads ------------------------------------------------------------------------------

    def check(self, type_: str, document: Document, fmt: str = "json") -> CheckReport:
        """Dry run of ``propose``: the compatibility and security report, nothing written."""
        check_type(type_)
        compiled = compile_schema(document, fmt)
        with self._store.read() as db:
            return self._report(Store.versions(db, type_), Store.mode(db, type_), type_, compiled)

    def mode(self, type_: str) -> Mode:
        check_type(type_)
        with self._store.read() as db:
            return Mode.parse(Store.mode(db, type_) or DEFAULT_MODE)

    def get(self, type_: str, version: int | None = None) -> SchemaVersion:
        """One version; without ``version`` the active one, or else the newest."""
        check_type(type_)
        with self._store.read() as db:
            if version is None:
                rows = Store.versions(db, type_)
                row = next((r for r in rows if r.state == State.ACTIVE), rows[-1] if rows else None)
            else:
                row = Store.row(db, type_, version)
            if row is None:
                what = f"{type_} v{version}" if version is not None else f"any version of {type_}"
                raise NotFoundError(f"no schema: {what}")
            approvals = Store.approvals(db, type_, row.version)
        return self._version(row, approvals)

    def versions(self, type_: str) -> list[SchemaVersion]:
        check_type(type_)
        with self._store.read() as db:
            rows = [(r, Store.approvals(db, type_, r.version)) for r in Store.versions(db, type_)]
        return [self._version(r, a) for r, a in rows]

    def list(self) -> list[SubjectInfo]:
        out = []
        with self._store.read() as db:
            for type_, mode in Store.subjects(db):
                rows = Store.versions(db, type_)
                active = next((r for r in rows if r.state == State.ACTIVE), None)
                pending = next((r for r in rows if r.state == State.PROPOSED), None)
                out.append(
                    SubjectInfo(
                        type_,
                        Mode.parse(mode or DEFAULT_MODE),
                        active.version if active else None,
                        pending.version if pending else None,
                        len(rows),
                        active.fmt if active else None,
                        active.fingerprint if active else None,
                    )
                )
        return out

    def active(self, type_: str) -> SchemaVersion:
        """The active version (cached; activations elsewhere are noticed within refresh_interval)."""
        self._refresh()
        cached = self._active.get(type_)
        if cached is not None:
            return cached
        check_type(type_)
        with self._store.read() as db:
            generation = Store.generation(db)
            row = Store.row(db, type_, state=State.ACTIVE)
            approvals = Store.approvals(db, type_, row.version) if row is not None else []
        if row is None:
            raise NotFoundError(f"no active schema for {type_}")
        version = self._version(row, approvals)
        with self._cache_lock:
            if generation != self._generation:
                self._active.clear()
                self._generation = generation
            self._active[type_] = version
        return version

    def validate(self, type_: str, data: Any) -> SchemaVersion:
        """Validate plaintext event data against the active version; returns that version."""
        version = self.active(type_)
        version.validate(data)
        return version

    # --- internals ----------------------------------------------------------------------------

    def _authorize(self, principal: str, action: str, type_: str, audit_action: str) -> None:
        try:
            policy.check(self._authorizer, principal, action, ("Schema", type_))
        except AccessDenied:
            self._record(audit_action, principal, type_, DENIED, reason="forbidden", needed=action)
            raise

    def _record(
        self, action: str, principal: str, type_: str, outcome: str, reason: str = "", **meta: MetaValue
    ) -> None:
        self._audit.record(
            action,
            principal=principal,
            resource=f"Schema::{type_}",
            outcome=outcome,
            reason=reason,
            type=type_,
            **meta,
        )

    def _proposed(self, db: sqlite3.Connection, type_: str, version: int) -> Row:
        if isinstance(version, bool) or not isinstance(version, int):
            raise InputError("version must be an integer")
        row = Store.row(db, type_, version)
        if row is None:
            raise NotFoundError(f"no schema: {type_} v{version}")
        if row.state != State.PROPOSED:
            raise ConflictError(f"{type_} v{version} is {row.state}, not proposed")
        return row

    def _activate(self, db: sqlite3.Connection, principal: str, row: Row) -> None:
        active = Store.row(db, row.type, state=State.ACTIVE)
        if active is not None:
            Store.set_state(db, row.type, active.version, State.SUPERSEDED, principal)
        Store.set_state(db, row.type, row.version, State.ACTIVE, principal)
        Store.bump(db)
        self._record(
            "schema.activate",
            principal,
            row.type,
            OK,
            version=row.version,
            fingerprint=row.fingerprint,
            superseded=active.version if active else None,
        )

    def _report(self, rows: list[Row], mode: str | None, type_: str, compiled: CompiledSchema) -> CheckReport:
        m = Mode.parse(mode or DEFAULT_MODE)
        accepted = {r.version: self._compiled(r) for r in rows if r.state in (State.ACTIVE, State.SUPERSEDED)}
        compared, findings = compat.check(m, compiled, sorted(accepted.items()))
        active = next((r.version for r in rows if r.state == State.ACTIVE), None)
        security = (
            [replace(f, against=active) for f in regressions(accepted[active], compiled)] if active else []
        )
        return CheckReport(
            type_, compiled.fmt, compiled.fingerprint, m, compared, tuple(findings), tuple(security), active
        )

    def _compiled(self, row: Row) -> CompiledSchema:
        compiled = compile_schema(row.document, row.fmt)
        if compiled.fingerprint != row.fingerprint:
            raise SchemaSecurityError(
                f"{row.type} v{row.version} does not match its stored fingerprint (tampered?)"
            )
        return compiled

    def _version(self, row: Row, approvals: list[tuple[str, str]]) -> SchemaVersion:
        return SchemaVersion(
            row.type,
            row.version,
            State(row.state),
            row.proposer,
            row.created_at,
            CheckReport.from_dict(orjson.loads(row.report)),
            tuple(approvals),
            self._compiled(row),
        )

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._interval:
            return
        with self._store.read() as db:
            generation = Store.generation(db)
        with self._cache_lock:
            if generation != self._generation:
                self._active.clear()
                self._generation = generation
            self._checked_at = now

    def _invalidate(self) -> None:
        with self._cache_lock:
            self._active.clear()
            self._checked_at = float("-inf")


def approvals_complete(proposer: str, approvals: list[tuple[str, str]], needs_security: bool) -> bool:
    """A schema approver who is not the proposer and, if needed, a security approver who is
    neither (checked again here, so rows written before the rule cannot activate a change)."""
    schema = {p for k, p in approvals if k == SCHEMA and p != proposer}
    if not schema:
        return False
    if not needs_security:
        return True
    return any(k == SECURITY and p != proposer and schema - {p} for k, p in approvals)


def _report_meta(report: CheckReport, version: int) -> dict[str, MetaValue]:
    kinds = report.kinds()
    if len(kinds) > _MAX_KINDS_CHARS:
        kinds = kinds[:_MAX_KINDS_CHARS].rsplit(",", 1)[0] + ",+more"
    return {
        "version": version,
        "fingerprint": report.fingerprint,
        "fmt": report.fmt,
        "findings": kinds,
        "compat_findings": len(report.compatibility),
        "security_findings": len(report.security),
    }


def _incompatible_message(type_: str, report: CheckReport) -> str:
    shown = "; ".join(str(f) for f in report.compatibility[:3])
    more = f" (+{len(report.compatibility) - 3} more)" if len(report.compatibility) > 3 else ""
    return f"{type_}: change is not {report.mode} compatible: {shown}{more}"
