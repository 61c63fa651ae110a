"""``eventward backup`` / ``eventward restore``: copies of a home that cannot resurrect an erased subject.

``backup DIR`` needs read_audit (it copies the audit log) and anchors the key state first.
``restore DIR`` works on the files (the home may be empty after a disaster), so it is an operator
action like ``init``: it refuses another deployment's backup, a keyring or erasure ledger older
than the anchored key state, and an audit log older than the home's or the verifier's remembered
checkpoint (``--state``), then opens the home, which replays the ledger before serving.
"""

from __future__ import annotations

from pathlib import Path

import typer

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, authorize, deployment
from eventward.errors import NotFoundError

_JSON = common.json_option()


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the root app."""
    app.command("backup", epilog=common.examples("eventward backup /var/backups/ew-2026-12-06"))(backup_cmd)
    app.command("restore", epilog=common.examples("eventward restore /var/backups/ew-2026-12-06 --json"))(
        restore_cmd
    )


def backup_cmd(
    dest: Path = typer.Argument(..., metavar="DIR", help="A new (or empty) directory outside the home."),
    principal: str = as_admin(),
    as_json: bool = _JSON,
) -> None:
    """Back up the home: consistent SQLite copies, the other files, a manifest the KMS authenticates."""
    from eventward._internal.backup import backup
    from eventward._internal.policy.base import READ_AUDIT

    with deployment(principal) as dep:
        authorize(dep, principal, READ_AUDIT, ("Audit", "log"))
        r = backup(dep, dest, principal=principal)
    doc = {"path": str(r.path), "deployment": r.deployment, "files": r.files,
           "keyring_generation": r.keyring_generation, "ledger_entries": r.ledger_entries, "audit_size": r.audit_size}
    if as_json:
        common.emit_json(doc)
        return
    common.console.print(
        f"backed up {r.files} file(s) of {r.deployment} to {r.path} (audit size {r.audit_size}, "
        f"{r.ledger_entries} erasure(s) in the ledger)", highlight=False, markup=False)


def restore_cmd(
    src: Path = typer.Argument(..., metavar="DIR", help="A backup made by 'eventward backup'."),
    state: Path = typer.Option(
        None, "--state", help="The verifier's audit state (default: the one 'audit verify' keeps for this log)."),
    principal: str = as_admin(),
    as_json: bool = _JSON,
) -> None:
    """Restore a backup into the home, refusing anything that would resurrect erased data."""
    from eventward._internal.audit.state import default_state_path
    from eventward._internal.backup import deployment_id, restore
    from eventward._internal.home import Home

    home = common.home()
    if state is None:
        try:
            state = default_state_path(deployment_id(Home(src / "home")))
        except NotFoundError:
            state = None  # not a backup: restore says so
    r = restore(src, home, principal=principal, state=state)
    doc = {"deployment": r.deployment, "files": r.files, "kept_live": r.kept_live,
           "erasures_replayed": r.erasures_replayed, "keys_removed": r.keys_removed}
    if as_json:
        common.emit_json(doc)
        return
    kept = f"; kept the home's newer {', '.join(r.kept_live)}" if r.kept_live else ""
    common.console.print(
        f"restored {r.files} file(s) of {r.deployment}{kept}; replayed {r.erasures_replayed} erasure(s), "
        f"removing {r.keys_removed} key(s) of forgotten subjects", highlight=False, markup=False)
