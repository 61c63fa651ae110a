"""Binding a new home to its PostgreSQL database (``init`` with ``store.backend: postgres``)."""

from __future__ import annotations

from eventward._internal.audit.signing import ensure_key, load_signer
from eventward._internal.config import StoreConfig
from eventward._internal.home import Home
from eventward._internal.store.dsn import resolve_dsn
from eventward._internal.store.migrations import Migration
from eventward._internal.store.pg import Database


def bind_new_home(home: Home, cfg: StoreConfig) -> list[Migration]:
    """Make the audit key (it names the deployment), then migrate the database and record that
    id in it: what ``eventward db migrate`` does, run by ``init`` so a new home starts in one step.
    Another deployment's database is refused (StoreForeignDeployment); nothing is written to it."""
    ensure_key(home)
    dsn = resolve_dsn(cfg, home.root)
    return Database(dsn, connect_timeout=cfg.connect_timeout_s).migrate(load_signer(home.audit_key).name)
