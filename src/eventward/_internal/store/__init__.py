"""Control-plane state on PostgreSQL: one database every ``eventward serve`` replica shares.

SQLite files in the home stay the embedded default (``store.backend: sqlite``). With
``store: {backend: postgres, dsn_env: NAME}`` (or ``dsn_file``) the control-plane state (key
store and erasure ledger, audit log, schema registry, trust registry, seal grants, policy
versions, the reconciler's positions, the PKI's book and CRL) lives in one PostgreSQL database,
behind a connection pool (``store.pg.Database``). The schema is versioned
(``store.migrations``); ``eventward db migrate`` creates or upgrades it and records the
deployment id, so a replica never starts on a database at another version or of another
deployment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventward._internal.store.dsn import describe, resolve_dsn
    from eventward._internal.store.migrations import MIGRATIONS, TARGET_VERSION
    from eventward._internal.store.pg import Database, SchemaStatus

__all__ = ["MIGRATIONS", "TARGET_VERSION", "Database", "SchemaStatus", "describe", "resolve_dsn"]

# Loaded on first use (PEP 562): importing a submodule (e.g. store.migrations, which every
# store's SQLite path names) must not load psycopg and its pool on a SQLite home.
_WHERE = {"describe": "dsn", "resolve_dsn": "dsn", "MIGRATIONS": "migrations", "TARGET_VERSION": "migrations",
          "Database": "pg", "SchemaStatus": "pg"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
