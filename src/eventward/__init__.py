"""eventward: event streams secure by default.

Two ways in, one interface (the same Producer and Consumer):

* client mode, for services: ``eventward.connect(directory)`` with the service's own enrolled
  identity (``eventward service enroll``); keys, schemas and trust come from the control plane.
* home mode, for one trusted process on one machine: ``eventward.open_home(path)`` opens a
  deployment home (it holds every key; demos, tests, single-binary apps).

Everything else in the package is internal and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventward import errors

if TYPE_CHECKING:
    from eventward._internal.client.consumer import Consumer
    from eventward._internal.client.producer import Producer
    from eventward._internal.client.types import Delivered, RunStats
    from eventward._internal.control.connect import Client, connect
    from eventward._internal.deployment import Deployment

__all__ = [
    "Client",
    "Consumer",
    "Delivered",
    "Deployment",
    "Producer",
    "RunStats",
    "connect",
    "errors",
    "open_home",
]

_LAZY = {  # imported on first use, so `import eventward.errors` stays cheap
    "Client": "eventward._internal.control.connect",
    "connect": "eventward._internal.control.connect",
    "Consumer": "eventward._internal.client.consumer",
    "RunStats": "eventward._internal.client.types",
    "Producer": "eventward._internal.client.producer",
    "Delivered": "eventward._internal.client.types",
    "Deployment": "eventward._internal.deployment",
}


def open_home(path: str | None = None, *, principal: str | None = None, passphrase: str | None = None) -> Deployment:
    """Home mode: the deployment in ``path`` (default ``$EVENTWARD_HOME`` or ``./.eventward``).

    ``principal`` picks that principal's broker credentials on NATS/Kafka; ``passphrase`` opens a
    passphrase-protected keyring (default: ``$EVENTWARD_PASSPHRASE``).
    """
    from eventward._internal.deployment import Deployment
    from eventward._internal.home import Home

    return Deployment.open(Home.resolve(path), principal=principal, passphrase=passphrase)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventward' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
