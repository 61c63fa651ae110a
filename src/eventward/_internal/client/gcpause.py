"""The automatic cyclic collector, paused while one batch is processed.

Why: a batch's objects (parsed envelopes, decrypted copies, the Delivered events, a producer
call's encrypted copies) live for one batch and then die by reference count. CPython's
generational collector promotes whatever is alive when it runs, so each batch pushed thousands
of such objects into the oldest generation, and the full collections that promotion triggers
walk the whole heap: 2.5 us per produced and 6-7 us per consumed event on the deployed e2e
benchmark, a tenth of its time (measured with gc.callbacks). Paused, they are never promoted.

The pause is process-wide (the collector is), so it is counted across threads: the first
holder pauses the collector if it was running, the last one out resumes it, and a collector
the application turned off stays off. It is bounded in time, not only by the batch: a holder
that ``check``s past its deadline (a slow handler) resumes the collector early, so other
threads' cyclic garbage waits at most about ``max_pause`` plus one handler call. Cycles made
during the batch are collected once the collector runs again. ``timeit`` does the same for the
same reason.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from types import TracebackType

#: How long one holder may keep the collector paused (seconds); a batch longer than this
#: resumes it at its next ``check``.
MAX_PAUSE_S = 0.05

#: ``EVENTWARD_GC_PAUSE=0`` turns pausing off for the process (the collector is then never touched).
ENABLED = os.environ.get("EVENTWARD_GC_PAUSE", "1").strip().lower() not in ("0", "false", "no", "off")

_lock = threading.Lock()
_holders = 0
_resume = False  # the collector was running when the first holder paused it: the last one resumes it


class BatchPause:
    """``with BatchPause():`` around one batch; ``check()`` between its events."""

    __slots__ = ("_held", "deadline")

    def __init__(self) -> None:
        self._held = False
        self.deadline = 0.0

    def __enter__(self) -> BatchPause:
        global _holders, _resume
        if not ENABLED:
            return self
        with _lock:
            if _holders == 0:
                _resume = gc.isenabled()
                if _resume:
                    gc.disable()
            _holders += 1
        self._held = True
        self.deadline = time.monotonic() + MAX_PAUSE_S
        return self

    def release(self) -> None:
        """Give up this holder's pause (idempotent); the last holder out resumes the collector."""
        global _holders, _resume
        if not self._held:
            return
        self._held = False
        with _lock:
            _holders -= 1
            if _holders == 0 and _resume:
                _resume = False
                gc.enable()

    def check(self) -> None:
        """Release the pause if this batch has held it longer than ``MAX_PAUSE_S``."""
        if self._held and time.monotonic() > self.deadline:
            self.release()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
