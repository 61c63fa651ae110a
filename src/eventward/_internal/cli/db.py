"""``eventward db migrate|status``: the PostgreSQL schema behind ``store.backend: postgres``.

``migrate`` creates or upgrades the schema (idempotent: a second run applies nothing) and binds
the database to this home's deployment id, so no replica of another deployment can start on it.
Like ``init`` and ``restore`` it is an operator action on the deployment's files and database,
not a policy-checked one: whoever can read the DSN can change the schema anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from eventward._internal.cli import common
from eventward.errors import ConfigError

if TYPE_CHECKING:
    from eventward._internal.home import Home
    from eventward._internal.store import Database

_JSON = common.json_option()


def register(app: typer.Typer) -> None:
    """Add the ``db`` group to the root app."""
    db = typer.Typer(help="The PostgreSQL control-plane database (store.backend: postgres).", no_args_is_help=True)
    db.command("migrate", epilog=common.examples("EW_DSN=postgresql://ew@db/eventward eventward db migrate"))(
        migrate_cmd
    )
    db.command("status", epilog=common.examples("eventward db status --json"))(status_cmd)
    db.command("import", epilog=common.examples("eventward db import --from /srv/eventward-home --json"))(
        import_cmd
    )
    app.add_typer(db, name="db")


def _database(home: Home) -> tuple[Database, str]:
    from eventward._internal.backup import deployment_id
    from eventward._internal.config import Config
    from eventward._internal.store import Database, resolve_dsn

    cfg = Config.load(home.require().config)
    if cfg.store.backend != "postgres":
        raise ConfigError(
            f"{home.config.name}: store.backend is {cfg.store.backend}; set store: {{backend: postgres, "
            "dsn_env: NAME}} to use PostgreSQL"
        )
    dsn = resolve_dsn(cfg.store, home.root)
    return (Database(dsn, connect_timeout=cfg.store.connect_timeout_s, statement_timeout=cfg.store.statement_timeout_s),
            deployment_id(home))


def migrate_cmd(as_json: bool = _JSON) -> None:
    """Create or upgrade the eventward schema; record this deployment's id. Safe to re-run."""
    db, dep_id = _database(common.home())
    applied = db.migrate(dep_id)
    st = db.status()
    if as_json:
        common.emit_json({"database": st.where, "version": st.version, "deployment": st.deployment_id,
                          "applied": [m.version for m in applied]})
        return
    if applied:
        for m in applied:
            common.console.print(f"applied migration {m.version}: {m.name}", highlight=False, markup=False)
    common.console.print(f"{st.where} is at schema version {st.version} (deployment {st.deployment_id})"
                         + ("" if applied else "; nothing to do"), highlight=False, markup=False)


def status_cmd(as_json: bool = _JSON) -> None:
    """Show the schema version, pending migrations and the deployment the database belongs to.
    Exit 1 when the database is not ready for this home (what to run is printed)."""
    home = common.home()
    db, dep_id = _database(home)
    st = db.status()
    problem: str | None = None
    try:
        db.require(st, dep_id)
    except ConfigError as e:
        problem = e.message
    if as_json:
        common.emit_json({"database": st.where, "version": st.version, "target": st.target,
                          "deployment": st.deployment_id, "pending": [m.version for m in st.pending],
                          "ready": problem is None, "problem": problem})
    else:
        common.console.print(f"{st.where}: schema version {st.version} (this eventward: {st.target}), "
                             f"deployment {st.deployment_id or '-'}", highlight=False, markup=False)
        for m in st.pending:
            common.console.print(f"  pending {m.version}: {m.name}", highlight=False, markup=False)
        if problem:
            common.err_console.print(problem, highlight=False, markup=False)
    if problem is not None:
        raise typer.Exit(common.EXIT_PROBLEM)


def import_cmd(
    source: Path = typer.Option(None, "--from", metavar="HOME",
                                help="The embedded home whose keys.db and audit.db to move (default: this home)."),
    as_json: bool = _JSON,
) -> None:
    """Move an embedded home's key store and audit log into this home's PostgreSQL database (migrated,
    same deployment, still empty), in one transaction; 'audit verify' passes afterwards."""
    from eventward._internal.home import Home
    from eventward._internal.store.importer import import_home

    home = common.home()
    db, dep_id = _database(home)
    report = import_home(Home(source.expanduser().resolve()) if source else home, db, dep_id)
    if as_json:
        common.emit_json({"database": report.database, "deployment": report.deployment, "rows": report.rows,
                          "stale_files": report.stale_files})
        return
    total = sum(report.rows.values())
    common.console.print(f"imported {total} row(s) into {report.database} (deployment {report.deployment})",
                         highlight=False, markup=False)
    for path in report.stale_files:
        common.err_console.print(
            f"{path} still holds the wrapped keys and records: verify ('eventward audit verify') and then "
            "delete it, or a subject forgotten later keeps a copy there", highlight=False, markup=False)
