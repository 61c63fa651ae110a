"""Where the PostgreSQL DSN comes from, and how it may be shown.

The DSN can carry a password, so it is never in ``eventward.yaml`` (config.py refuses it):
``store.dsn_env`` names an environment variable, ``store.dsn_file`` a 0600 file. Messages,
logs and audit records name the database by :func:`describe` (host, port, database, user),
never by the DSN itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventward._internal.config import StoreConfig
from eventward._internal.home import read_secret
from eventward.errors import ConfigError


def _conninfo_to_dict(dsn: str) -> dict[str, object]:
    """libpq's reading of a DSN; ValueError if it is not one. psycopg is imported here, not at
    module level, so a SQLite home (and the CLI) never loads it."""
    import psycopg.conninfo

    try:
        return dict(psycopg.conninfo.conninfo_to_dict(dsn))
    except psycopg.ProgrammingError:
        raise ValueError("not a PostgreSQL DSN") from None


def resolve_dsn(cfg: StoreConfig, home_root: Path) -> str:
    """The DSN the configuration points at; ConfigError (naming the variable or file, never a
    value) when it is missing, empty, or not a DSN."""
    if cfg.backend != "postgres":
        raise ConfigError("store.backend is not postgres: there is no DSN to resolve")
    if cfg.dsn_env:
        dsn = os.environ.get(cfg.dsn_env, "").strip()
        if not dsn:
            raise ConfigError(
                f"store.dsn_env names {cfg.dsn_env}, which is not set: export {cfg.dsn_env}=<PostgreSQL DSN>"
            )
        where = f"environment variable {cfg.dsn_env}"
    else:
        path = Path(cfg.dsn_file or "")
        path = path if path.is_absolute() else home_root / path
        try:
            dsn = read_secret(path).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"store.dsn_file {path} is not UTF-8 text") from None
        if not dsn:
            raise ConfigError(f"store.dsn_file {path} is empty")
        where = f"store.dsn_file {path}"
    try:
        _conninfo_to_dict(dsn)
    except ValueError:
        raise ConfigError(f"{where} does not hold a valid PostgreSQL DSN") from None
    return dsn


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` for messages: everything but the password."""
    try:
        d = _conninfo_to_dict(dsn)
    except ValueError:
        return "PostgreSQL (unparseable DSN)"
    host = str(d.get("host") or d.get("hostaddr") or "localhost")
    port = str(d.get("port") or "5432")
    user = f"{d['user']}@" if d.get("user") else ""
    return f"PostgreSQL {user}{host}:{port}/{d.get('dbname') or d.get('user') or 'postgres'}"


def scrub(text: str, dsn: str) -> str:
    """A driver message made safe to show: first line, no password, bounded length."""
    line = (text.strip().splitlines() or ["(no message)"])[0]
    try:
        password = _conninfo_to_dict(dsn).get("password")
    except ValueError:
        password = None
    if password:
        line = line.replace(str(password), "***")
    return line[:240]
