"""Deny-by-default authorization: Cedar policies compiled from policy.yaml, explained, cached,
and compiled again to broker-native permissions (NATS users, Kafka ACLs).

Importing ``eventward._internal.policy.base`` (the seam) must stay cheap and cycle-free, so the engine
and store are exported lazily: ``from eventward._internal.policy import PolicyEngine`` loads them.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "PolicyEngine": "eventward._internal.policy.engine",
    "PolicyStore": "eventward._internal.policy.store",
    "nats_subject": "eventward._internal.policy.compile_nats",
    "nats_inbox_prefix": "eventward._internal.policy.compile_nats",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eventward._internal.policy' has no attribute {name!r}")
