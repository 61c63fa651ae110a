"""Per-principal quotas shared by every ``serve`` replica: one token bucket row per principal.

With replicas on one PostgreSQL database, a bucket per replica would admit N times the
configured rate. Each principal's bucket is one row of ``eventward_control.gw_quota`` (migration
8), refilled and charged by one ``INSERT ... ON CONFLICT DO UPDATE`` whose row lock makes the
check and the charge atomic across replicas, with the database's clock (replicas on several
hosts need not agree on time). The gateway keeps its local bucket in front (``limits.RateLimiter``):
one replica alone never admits more than the quota, and a flood from one principal is refused
there without a database round trip. Pre-authentication limits per IP stay per replica, so
unauthenticated traffic never writes to the database.
"""

from __future__ import annotations

import psycopg

from eventward._internal.store.pg import Database

TABLE = "eventward_control.gw_quota"
_NOW = "extract(epoch FROM clock_timestamp())"
# The refilled balance of the existing row q, as of the new stamp.
_REFILLED = "LEAST(%(burst)s, q.tokens + GREATEST(0, EXCLUDED.stamp - q.stamp) * %(rate)s)"

_TAKE = f"""INSERT INTO {TABLE} AS q (principal, tokens, stamp)
    SELECT %(p)s, %(burst)s - %(n)s, {_NOW} WHERE %(burst)s >= %(n)s
    ON CONFLICT (principal) DO UPDATE SET tokens = {_REFILLED} - %(n)s, stamp = GREATEST(q.stamp, EXCLUDED.stamp)
    WHERE {_REFILLED} >= %(n)s
    RETURNING tokens"""
_DEBIT = f"""INSERT INTO {TABLE} AS q (principal, tokens, stamp) VALUES (%(p)s, %(burst)s - %(n)s, {_NOW})
    ON CONFLICT (principal) DO UPDATE SET tokens = {_REFILLED} - %(n)s, stamp = GREATEST(q.stamp, EXCLUDED.stamp)"""
_BALANCE = (f"SELECT LEAST(%(burst)s, tokens + GREATEST(0, {_NOW} - stamp) * %(rate)s) FROM {TABLE} "
            "WHERE principal = %(p)s")


class SharedBuckets:
    """Token buckets (``rate`` tokens/s, at most ``burst``) in the shared database ``db``
    (not closed here: it belongs to the gateway's group store)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def take(self, principal: str, n: float, rate: float, burst: float) -> float:
        """Take ``n`` tokens and return 0, or take nothing and return the seconds until they exist.
        StoreUnavailable when the database cannot answer (the request is refused: fail closed)."""
        args = {"p": principal, "n": float(n), "rate": float(rate), "burst": float(burst)}

        def run(conn: psycopg.Connection) -> float:
            if conn.execute(_TAKE, args).fetchone() is not None:
                return 0.0
            row = conn.execute(_BALANCE, args).fetchone()
            have = float(row[0]) if row is not None else float(burst)
            return max((n - have) / rate, 1e-3)

        return self._db.run("charge a quota", run)

    def debit(self, principal: str, n: float, rate: float, burst: float) -> None:
        """Charge work already done (events delivered); the balance may go negative."""
        args = {"p": principal, "n": float(n), "rate": float(rate), "burst": float(burst)}
        self._db.run("charge a quota", lambda conn: conn.execute(_DEBIT, args))
