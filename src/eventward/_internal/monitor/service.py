"""The live monitor: follows the audit log, evaluates the rules, records alerts, samples lag and DLQ depth.

``serve`` runs one in a background thread. On start it reads the existing log silently (the rules
learn their baselines: known producers, readers, rates) and from then on raises alerts; an alert
is an audit record (``monitor.alert``), which the metrics observer counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from eventward._internal.monitor import metrics
from eventward._internal.monitor.alerts import record_alert
from eventward._internal.monitor.lag import group_lags
from eventward._internal.monitor.rules import Alert, RuleEngine, load_rules
from eventward.errors import EventwardError

log = logging.getLogger("eventward.monitor")


class Monitor:
    """Poll ``audit`` every ``interval`` s; ``poll()`` also runs one step synchronously (tests, CLI)."""

    def __init__(
        self,
        audit: Any,
        transport: Any | None = None,
        *,
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        interval: float = 1.0,
        sample_every: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.audit = audit
        self.transport = transport
        self.engine = RuleEngine(rules or load_rules())
        self.interval = interval
        self.sample_every = sample_every
        self.clock = clock
        self.on_alert = on_alert
        self.pos = 0
        self._sampled = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # reads go through a read-only handle of their own: the writer's connection is not shared
        # across threads; alerts are written through ``audit`` (whose record() is locked)
        reader = getattr(audit, "reader", None)
        self.log = reader() if callable(reader) else audit

    def learn(self, upto: int | None = None) -> int:
        """Read the log up to index ``upto`` (default: all of it) without alerting: baselines
        only. Returns records read."""
        n = 0
        with self._lock:
            while (upto is None or self.pos < upto) and (
                batch := self.log.since(self.pos, 4096 if upto is None else min(4096, upto - self.pos))
            ):
                self.engine.feed_all(batch)
                self.pos = batch[-1].index + 1
                n += len(batch)
        return n

    def poll(self) -> list[Alert]:
        """One step: new records through the rules, then (every ``sample_every`` s) lag and DLQ depth."""
        out: list[Alert] = []
        with self._lock:
            if self.log is not self.audit:
                self.audit.flush()  # what this process buffered, visible to the reader now
            while batch := self.log.since(self.pos, 4096):
                self.pos = batch[-1].index + 1
                out += self.engine.feed_all(batch)
            now = self.clock()
            self.engine.tick(now)
            if self.transport is not None and now - self._sampled >= self.sample_every:
                self._sampled = now
                out += self._sample(now)
            for a in out:
                record_alert(self.audit, a)
                if self.on_alert is not None:
                    self.on_alert(a)
            if out:
                self.audit.flush()
        return out

    def _sample(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        try:
            lags = group_lags(self.transport)
            out += self.engine.lag(now, [(g.stream, g.group, g.lag) for g in lags])
        except EventwardError as e:
            log.debug("lag sample skipped: %s", e.code)
        try:
            for s in self.transport.streams():
                if s.endswith(".dlq"):
                    metrics.dlq_depth.child(s[:-4]).set(self.transport.end_offset(s))
        except EventwardError as e:
            log.debug("dlq depth sample skipped: %s", e.code)
        return out

    def start(self) -> Monitor:
        """Learn from the log as it is now and follow it, in a background thread (a long log
        does not delay the caller; what arrives meanwhile is judged, not learned)."""
        self.audit.flush()
        upto = self.log.size()
        self._thread = threading.Thread(target=self._run, args=(upto,), name="eventward-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self, upto: int) -> None:
        try:
            self.learn(upto)
        except EventwardError as e:
            log.warning("monitor could not read the audit log: %s", e.code)
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except EventwardError as e:  # a closed or unavailable log: try again next tick
                log.warning("monitor poll failed: %s", e.code)
            except Exception as e:  # never let the thread die silently; the type only, no data
                log.warning("monitor poll failed: %s", type(e).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.log is not self.audit:
            self.log.close()
