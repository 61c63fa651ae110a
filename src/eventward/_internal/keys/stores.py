"""Which key store a home uses: SQLite in the home (default) or PostgreSQL (``store.backend``).

The key service asks here instead of naming an implementation, so every path (CLI, SDK,
gateway, ``serve`` replicas) follows ``eventward.yaml``.
"""

from __future__ import annotations

from eventward._internal.audit.signing import load_signer
from eventward._internal.config import Config
from eventward._internal.home import Home
from eventward._internal.keys.store_base import KeyStore
from eventward.errors import ConflictError, NotFoundError


def home_deployment_id(home: Home) -> str:
    """The deployment's identity: the name of its audit key (as backup.deployment_id)."""
    if not home.audit_key.exists():
        raise NotFoundError(f"no deployment at {home.root} (no audit key)")
    return load_signer(home.audit_key).name


def open_key_store(home: Home, *, create: bool, busy_timeout: float = 5.0) -> KeyStore:
    """The configured key store. On PostgreSQL, ``create`` (``init``) migrates the database and
    binds it to this deployment; an open refuses an unmigrated, older, newer or foreign one."""
    cfg = Config.load(home.config)
    if cfg.store.backend == "postgres":
        from eventward._internal.keys.pg_store import PgKeyStore
        from eventward._internal.store.dsn import resolve_dsn
        from eventward._internal.store.pg import Database

        dep_id = home_deployment_id(home)
        s = cfg.store
        if create:
            Database(resolve_dsn(s, home.root), connect_timeout=s.connect_timeout_s).migrate(dep_id)
        db = Database.from_config(s, home.root, deployment_id=dep_id)
        try:
            store = PgKeyStore(db, owns_db=True)
            if create and store.meta_text("store_tag") is not None:
                raise ConflictError(
                    f"key store {db.where} already holds this deployment's keys: 'init' makes the keys of "
                    "a new home only; restore the keyring (or token) that belongs to this store"
                )
        except BaseException:
            db.close()
            raise
        return store
    from eventward._internal.keys.sqlite_store import SQLiteKeyStore

    return SQLiteKeyStore(home.keys_db, busy_timeout=busy_timeout, create=create)
