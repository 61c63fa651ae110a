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
    from eventward.client.consumer import Consumer
    from eventward.client.producer import Producer
    from eventward.client.types import Delivered, RunStats
    from eventward.control.connect import Client, connect
    from eventward.deployment import Deployment

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
    "Client": "eventward.control.connect",
    "connect": "eventward.control.connect",
    "Consumer": "eventward.client.consumer",
    "RunStats": "eventward.client.types",
    "Producer": "eventward.client.producer",
    "Delivered": "eventward.client.types",
    "Deployment": "eventward.deployment",
}


def open_home(path: str | None = None) -> Deployment:
    """Home mode: the deployment in ``path`` (default ``$EVENTWARD_HOME`` or ``./.eventward``)."""
    from eventward.deployment import Deployment
    from eventward.home import Home

    return Deployment.open(Home.resolve(path))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventward' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
