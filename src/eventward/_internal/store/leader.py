"""One replica at a time runs a background task: leadership through a PostgreSQL advisory lock.

``serve`` replicas share one database; work that must not run twice at once (the direct-path
reconciler's durable cursor and watermarks) runs only in the replica holding a session-level
advisory lock on a connection of its own. The lock is PostgreSQL's, so it ends with that
connection: a replica killed with SIGKILL, partitioned away or whose database restarted loses it,
and the next replica's ``lead()`` takes it. ``lead()`` is called before each unit of work and
checks the connection first (one round trip), so a replica that lost the lock stops within one
interval; it is not a fence for work already under way (the reconciler's records are
idempotent: a batch with a Publish record adds nothing).
"""

from __future__ import annotations

import contextlib

import psycopg

from eventward._internal.store.pg import bounded_connection_class, libpq_timeouts


class AdvisoryLeader:
    """Leadership of the task named by ``key`` (a 64-bit advisory lock key) among replicas."""

    def __init__(self, dsn: str, key: int, *, connect_timeout: float = 5.0, statement_timeout: float = 5.0) -> None:
        self._dsn, self._key = dsn, key
        # A hung database means not leading within the bound, never a reconciler stuck on a check.
        self._conn_class = bounded_connection_class(statement_timeout)
        self._timeouts = libpq_timeouts(connect_timeout, statement_timeout)
        self._conn: psycopg.Connection | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """Whether the last ``lead()`` found this replica leading."""
        return self._held

    def lead(self) -> bool:
        """True if this replica holds the lock now, taking it if it is free. Never raises: a
        database that cannot be reached means not leading (and the lock lost with the connection)."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop()
                self._conn = self._conn_class.connect(self._dsn, autocommit=True,
                                                      application_name="eventward-leader", **self._timeouts)
            if self._held:
                self._conn.execute("SELECT 1")  # the session is alive, so the lock is still ours
                return True
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            self._held = bool(row and row[0])
            return self._held
        except psycopg.Error:
            self._drop()
            return False

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def release(self) -> None:
        """Give up leadership (closing the session releases the lock)."""
        self._drop()
