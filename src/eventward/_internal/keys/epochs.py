"""The KEK epoch schedule: ``serve`` ends every class's KEK epoch once it is older than
``keys.kek_max_age_days`` (rotate, re-wrap live DEKs, destroy the old version in the KMS).

Destroying old KEK versions is what makes residual copies of forgotten subjects' DEKs (backups,
freed pages, WAL, replicas) unrecoverable, so the schedule runs inside the control plane, which
holds the KMS; ``eventward keys rotate --due`` does the same once, from a cron job.
"""

from __future__ import annotations

import logging
import threading

from eventward._internal.keys.service import KeyService, RotationReport
from eventward.errors import EventwardError

log = logging.getLogger("eventward.keys")

SCHEDULER = "eventward.scheduler"  # the principal scheduled rotations are audited under
DAY_S = 86_400.0


class EpochKeeper:
    """A daemon thread calling ``KeyService.rotate_due`` every ``interval`` seconds. A failure
    (KMS down) is logged by code and retried at the next tick; it never stops the server."""

    def __init__(self, keys: KeyService, *, max_age_days: float, interval: float) -> None:
        self.keys = keys
        self.max_age = max_age_days * DAY_S
        self.interval = interval
        self.rotations = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventward-kek-epochs", daemon=True)

    def tick(self) -> list[RotationReport]:
        """One check: the rotations it made (none when no epoch is due)."""
        try:
            done = self.keys.rotate_due(self.max_age, principal=SCHEDULER, scheduled=True)
        except EventwardError as e:
            self.last_error = e.code
            log.error("scheduled KEK rotation failed (%s); retried in %.0fs", e.code, self.interval)
            return []
        self.last_error = None
        self.rotations += len(done)
        for r in done:
            log.info("KEK epoch of %s ended: now %s, destroyed %s", r.cls, r.new_kek_id, list(r.destroyed_kek_ids))
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def start(self) -> EpochKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30.0)
