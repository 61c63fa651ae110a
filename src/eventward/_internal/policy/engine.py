"""PolicyEngine: the Authorizer every enforcement point calls, with a decision cache.

The hot path is one monotonic-clock comparison plus one dict lookup. The cache key is
(principal, action, resource, context items) and, when the active policy reads the time, the
UTC minute. Every ~0.25 s a decide() reads the store's one-row version pointer; a new version
is compiled and swapped in together with a fresh cache (one attribute assignment), so a
change applied by any process is enforced within about a quarter of a second plus compile
time. Denials, cached or not, are logged and audited: metadata only, never context values.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from eventward._internal.audit.base import DENIED, AuditSink, NullAudit, meta_list, meta_text
from eventward._internal.home import Home
from eventward._internal.log.partitions import topic_of
from eventward._internal.monitor.metrics import authz_evaluations
from eventward._internal.policy.base import Decision, Resource
from eventward._internal.policy.evaluator import Evaluator, NoPolicy
from eventward._internal.policy.store import PolicyStore, load
from eventward.errors import EventwardError

log = logging.getLogger("eventward.policy")

RELOAD_INTERVAL_S = 0.25
_monotonic = time.monotonic
MAX_CACHE_ENTRIES = 200_000


class _State:
    """What one policy version needs on the hot path; replaced as a whole on change."""

    __slots__ = ("cache", "evaluator", "uses_time", "version")

    def __init__(self, evaluator: Evaluator | NoPolicy) -> None:
        self.evaluator = evaluator
        self.version = evaluator.version
        self.uses_time = evaluator.uses_time
        self.cache: dict[tuple[Any, ...], Decision] = {}


class PolicyEngine:
    """Deny-by-default Cedar authorizer over the active version in a PolicyStore."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
        reload_interval: float = RELOAD_INTERVAL_S,
    ) -> None:
        self.store = store
        self._audit = audit or NullAudit()
        self._clock = clock
        self._interval = reload_interval
        self._reload_lock = threading.Lock()
        self._state = _State(NoPolicy())
        self._next_check = 0.0
        self.refresh()

    @classmethod
    def open(
        cls, home: Home, *, audit: AuditSink | None = None, clock: Callable[[], float] = time.time
    ) -> PolicyEngine:
        return cls(PolicyStore.open(home, audit=audit, clock=clock), audit=audit, clock=clock)

    def close(self) -> None:
        self.store.close()

    # --- the Authorizer protocol ---------------------------------------------------------
    def decide(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None = None
    ) -> Decision:
        if _monotonic() >= self._next_check:
            self.refresh()
        state = self._state
        try:
            items = tuple(context.items()) if context else None
            if state.uses_time:  # one clock reading names the cache bucket and the decision time
                key: tuple[Any, ...] = (principal, action, resource, items, int(self._clock() // 60))
            else:
                key = (principal, action, resource, items)
            d = state.cache[key]
        except KeyError:
            d = self._miss(state, key, principal, action, resource, context)
        except (TypeError, AttributeError):  # unhashable or non-mapping context: no caching
            d = state.evaluator.evaluate(principal, action, resource, context, self._now(state))
        if not d.allowed:
            self._report(d)
        return d

    def _miss(
        self,
        state: _State,
        key: tuple[Any, ...],
        principal: str,
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | None,
    ) -> Decision:
        now = key[-1] * 60.0 if state.uses_time else self._clock()
        d = state.evaluator.evaluate(principal, action, resource, context, now)
        authz_evaluations.child(action, "allow" if d.allowed else "deny").inc()  # misses only: cheap
        if len(state.cache) >= MAX_CACHE_ENTRIES:
            state.cache = {}  # bounded memory; a cold cache only costs speed
        state.cache[key] = d
        return d

    def _now(self, state: _State) -> float:
        # With a time-dependent policy, decide at the start of the cached minute so a cached
        # decision is exactly the one a fresh evaluation in that minute would give.
        ts = self._clock()
        return (ts // 60) * 60 if state.uses_time else ts

    def explain(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None = None
    ) -> Decision:
        """Evaluate afresh (bypassing the cache): the deciding policies and, for a denial, what is missing."""
        self.refresh()
        state = self._state
        return state.evaluator.evaluate(principal, action, resource, context, self._now(state))

    # --- introspection -------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._state.version

    def principals(self) -> tuple[str, ...]:
        return tuple(self._state.evaluator.spec.principals)

    def principal_roles(self, principal: str) -> tuple[str, ...]:
        p = self._state.evaluator.spec.principals.get(principal)
        return p.roles if p else ()

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has under the policy in force (log/partitions.py)."""
        return self._state.evaluator.spec.partitions(topic)

    def topic_of(self, stream: str) -> str:
        """The topic a stream belongs to: a partition stream ``T.p<n>`` of a partitioned ``T`` is ``T``."""
        return topic_of(stream, self._state.evaluator.spec.partitions)

    # --- policy changes ------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up a new active version if there is one (called by decide() at most every ~0.25 s)."""
        if not self._reload_lock.acquire(blocking=False):
            return  # another thread is reloading; keep serving the current version meanwhile
        try:
            self._next_check = time.monotonic() + self._interval
            try:
                active = self.store.active_version()
                if active != self._state.version:
                    self._state = _State(load(self.store.get(active)) if active else NoPolicy())
                    log.info("policy version %d active", active)
            except (EventwardError, OSError, ValueError, sqlite3.Error) as e:
                # Keep enforcing the last good version (it was validated) and retry next tick.
                log.warning(
                    "policy reload failed (%s); still enforcing version %d", type(e).__name__, self.version
                )
        finally:
            self._reload_lock.release()

    def _report(self, d: Decision) -> None:
        # The principal and resource id are the caller's (any length, any characters) and the
        # deciding forbids can be many: bounded here, or the audit log would refuse the denial.
        kind, rid = d.resource
        principal, resource = meta_text(d.principal), meta_text(f"{kind}::{rid}")
        deciding = meta_list(d.policies) or "default-deny"
        log.warning(
            "denied principal=%s action=%s resource=%s policies=%s", principal, d.action, resource, deciding
        )
        self._audit.record(
            "authorize",
            principal=principal,
            resource=resource,
            outcome=DENIED,
            reason="forbidden" if d.extra.get("forbidden") else "no_permit",
            requested=d.action,
            policies=deciding,
            policy_count=len(d.policies),
            version=self._state.version,
        )
