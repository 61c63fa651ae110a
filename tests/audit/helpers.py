"""Helpers for the audit tests: sample records and raw-SQLite tampering as an attacker would."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.tree import push_leaf


def events(n: int, start: int = 0, principal: str = "svc-orders") -> list[dict]:
    return [
        {
            "action": "key.unwrap",
            "principal": principal,
            "resource": "Class::pii",
            "meta": {"kid": f"k{i}", "n": i},
        }
        for i in range(start, start + n)
    ]


def fill(log: AuditLog, n: int, start: int = 0) -> None:
    log.append_many(events(n, start))


def raw(db: Path) -> sqlite3.Connection:
    """A raw connection with the append-only triggers dropped, as an attacker with file access would."""
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def tamper(db: Path, sql: str, *args: object) -> None:
    conn = raw(db)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def flip(data: bytes, at: int = 10) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def rebuild_tree(db: Path) -> None:
    """Recompute every stored subtree hash from the stored leaves (a thorough attacker)."""
    conn = raw(db)
    try:
        conn.execute("DELETE FROM nodes")
        frontier: list = []
        rows = []
        for idx, leaf in conn.execute("SELECT idx, leaf FROM records ORDER BY idx").fetchall():
            rows.extend(push_leaf(frontier, idx, bytes(leaf)))
        conn.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", rows)
    finally:
        conn.close()


def backup(db: Path, to: Path) -> None:
    """Consistent copy of a live WAL database (what a backup, or an attacker, would take)."""
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def restore(copy: Path, db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(copy, db)
