"""The verifier's own memory: the last checkpoint ``audit verify`` verified, kept outside the home.

Checkpoints stored in the audit database prove nothing once someone truncates the records and
deletes the checkpoints together. So the verifier keeps the newest checkpoint it verified in a
file of its own (default ``$XDG_CONFIG_HOME/eventward/_internal/audit-state/<origin>.checkpoint``, 0600)
and next time requires the log to extend it: a shorter log is a rollback, a different history a
fork, even with every stored checkpoint gone. Checkpoints cosigned by configured witnesses (their
0x04 verifier keys) are held to the same rule, and a rollback below one of them is reported as
one the witness never cosigned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from eventward._internal.audit.checkpoint import Checkpoint, verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.note import NoteKey
from eventward._internal.audit.signing import AuditVerifier
from eventward._internal.audit.tree import ConsistencyProof
from eventward._internal.audit.verify import (
    Progress,
    VerifyReport,
    check_extends,
    verify_consistency_proof,
    verify_log,
)
from eventward._internal.home import write_secret
from eventward.errors import AuditFork, AuditIntegrityError, AuditRollback, ConfigError, EventwardError

STATE_ENV = "EVENTWARD_AUDIT_STATE"


def default_state_path(origin: str) -> Path:
    """Per-log state file under the user's config directory (never inside a home)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", origin)
    return Path(base) / "eventward" / "audit-state" / f"{safe}.checkpoint"


def load_state(path: Path) -> str | None:
    """The checkpoint text kept at ``path``, or None when there is none yet."""
    if not path.exists():
        return None
    try:  # a checkpoint is public: any mode reads; it is written 0600 all the same
        return path.read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"audit state {path} is unreadable or not a checkpoint") from None


def save_state(path: Path, checkpoint: str) -> None:
    write_secret(path, checkpoint.encode())


@dataclass(frozen=True)
class StateReport:
    """``audit verify`` with memory: the log's report and what the outside evidence said."""

    report: VerifyReport
    remembered: Checkpoint | None  # from the state file, before this run
    saved: Checkpoint | None  # written to the state file by this run (only when ok)
    witnessed: tuple[Checkpoint, ...]  # checkpoints verified with every configured witness's cosignature
    unwitnessed_records: int  # records after the newest witnessed checkpoint (0 without witnesses)


def verify_with_state(
    log: AuditLog,
    verifier: AuditVerifier,
    *,
    state: Path | None,
    checkpoint: str | None = None,
    witnesses: Sequence[NoteKey] = (),
    witnessed: Sequence[str] = (),
    progress: Progress | None = None,
) -> StateReport:
    """Verify the whole log against its stored checkpoints, ``checkpoint``, the remembered one and
    the ``witnessed`` ones (each must carry every witness's cosignature); on success sign a fresh
    checkpoint, check it against the verified tree and remember it in ``state``."""
    remembered_text = load_state(state) if state is not None else None
    remembered = _outside(remembered_text, verifier, (), "remembered checkpoint", state)
    seen = [_witnessed(t, verifier, witnesses) for t in witnessed]
    outside = [c for c in (remembered, *seen) if c is not None]
    report = verify_log(log, checkpoint=checkpoint, public_key=verifier, progress=progress)
    if report.ok:
        error = _extends(log, report, outside, witnesses)
        if error is not None:
            report = replace(report, error=error)
    saved = None
    if report.ok and state is not None:
        saved = _newest(log, verifier, report)
        if saved is not None and (remembered is None or saved.size >= remembered.size):
            save_state(state, saved.text)
    newest = max((c.size for c in seen), default=0)
    unwitnessed = max(report.size - newest, 0) if witnesses else 0
    return StateReport(report, remembered, saved, tuple(seen), unwitnessed)


@dataclass(frozen=True)
class ServedReport:
    """``audit verify`` in client mode: the served checkpoint, verified, and what was kept before."""

    checkpoint: Checkpoint
    remembered: Checkpoint | None  # from the state file, before this run
    saved: bool  # the state file now holds ``checkpoint``


Fetch = Callable[[int], tuple[str, ConsistencyProof | None]]  # from_size -> (checkpoint text, proof)


def verify_served(verifier: AuditVerifier, fetch: Fetch, *, state: Path | None) -> ServedReport:
    """A checkpoint served by the control plane (``fetch``, asked for a proof from the size kept in
    ``state``), verified as a witness would: signed by ``verifier``'s key, and extending the kept
    one (audit.verify.check_extends). Only then is it remembered. Raises AuditIntegrityError
    (another key, a malformed answer), AuditRollback and AuditFork; the state is then unchanged."""
    remembered = _outside(load_state(state) if state is not None else None, verifier, (), "remembered checkpoint",
                          state)
    text, proof = fetch(0 if remembered is None else remembered.size)
    served = verify_checkpoint(text, verifier)
    check_extends(remembered, served, proof)
    if state is not None and (remembered is None or served.size > remembered.size):
        save_state(state, served.text)
    return ServedReport(served, remembered, state is not None)


def _newest(log: AuditLog, verifier: AuditVerifier, report: VerifyReport) -> Checkpoint | None:
    """A checkpoint of the verified tree to remember: a fresh one when the key can sign (proven
    consistent with what was verified), else the newest stored one the verification covered."""
    try:
        fresh = log.checkpoint()
    except EventwardError:  # a read-only copy: remember what is there
        fresh = None
    if fresh is not None:
        verify_consistency_proof(log.consistency(report.size, fresh.size), report.root, fresh)
        return fresh
    stored = [verify_checkpoint(t, verifier) for t in log.checkpoints()]
    covered = [c for c in stored if c.size <= report.size]
    return max(covered, key=lambda c: c.size) if covered else None


def _outside(
    text: str | None, verifier: AuditVerifier, witnesses: Sequence[NoteKey], what: str, where: Path | None
) -> Checkpoint | None:
    if text is None:
        return None
    try:
        return verify_checkpoint(text, verifier, witnesses=witnesses)
    except AuditIntegrityError as e:
        raise AuditIntegrityError(f"{what} ({where}): {e.message}") from None


def _witnessed(text: str, verifier: AuditVerifier, witnesses: Sequence[NoteKey]) -> Checkpoint:
    cp = verify_checkpoint(text, verifier, witnesses=witnesses)
    signed = {(s.name, s.key_id) for s in cp.cosignatures}
    missing = [w.name for w in witnesses if (w.name, w.key_id) not in signed]
    if missing:
        raise AuditIntegrityError("witnessed checkpoint lacks the cosignature of " + ", ".join(missing))
    return cp


def _extends(
    log: AuditLog, report: VerifyReport, outside: Sequence[Checkpoint], witnesses: Sequence[NoteKey]
) -> AuditIntegrityError | None:
    """Every outside checkpoint must be a prefix of the verified tree (verify_log checked one)."""
    for cp in sorted(outside, key=lambda c: (c.size, not c.cosignatures)):  # a witness named first
        by = ", ".join(s.name for s in cp.cosignatures)
        if cp.size > report.size:
            who = f"cosigned by witness {by}" if by else "this verifier kept"
            tail = "; the witness never cosigned this rollback" if by else ""
            return AuditRollback(
                f"rollback: the log has {report.size} records but the checkpoint of size {cp.size} {who} "
                f"says more existed (truncated, or restored from a backup){tail}",
                index=report.size,
            )
        try:
            verify_consistency_proof(log.consistency(cp.size, report.size), cp, report.root)
        except AuditIntegrityError:
            return AuditFork(
                f"fork: the log does not extend the checkpoint of size {cp.size}"
                + (f" cosigned by witness {by}" if by else ""),
                index=0,
            )
    return None
