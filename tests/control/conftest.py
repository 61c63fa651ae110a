"""A home-mode control plane and enrolled services, each with its own directory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventward._internal import demo
from eventward._internal.control.client import LocalControlAPI
from eventward._internal.control.connect import Client
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.control.plane import ControlPlane
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log.embedded import EmbeddedLog

MAY_SEAL = {demo.PRODUCER: {demo.TOPIC: [demo.EVENT_TYPE]}, demo.SHIPPING: {}, demo.ANALYTICS: {}}


@dataclass
class World:
    root: Path
    dep: Deployment
    plane: ControlPlane
    identities: dict[str, ServiceIdentity] = field(default_factory=dict)
    clients: list[Client] = field(default_factory=list)

    def enroll(self, principal: str, may_seal: dict[str, list[str]] | None = None) -> ServiceIdentity:
        ident = ServiceIdentity.create(self.root / "services" / principal, principal)
        grant = self.plane.approve(demo.ADMIN, ident.request_path.read_bytes(),
                                   MAY_SEAL.get(principal, {}) if may_seal is None else may_seal)
        ident.install(grant)
        self.identities[principal] = ident
        return ident

    def client(self, principal: str, api=None, **kw) -> Client:
        ident = self.identities.get(principal) or self.enroll(principal)
        transport = EmbeddedLog.open(self.dep.home)  # stands for the broker: no key material in it
        c = Client(ident, api or LocalControlAPI(self.plane, principal), transport, notice_wait=0.5, **kw)
        self.clients.append(c)
        return c


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    dep = Deployment.init(Home(tmp_path / "control-plane"), admin=demo.ADMIN)
    demo.setup(dep, lambda *a: None)
    demo.schemas(dep, demo.DemoResult(), lambda *a: None)
    plane = ControlPlane.open(dep)
    w = World(tmp_path, dep, plane)
    try:
        yield w
    finally:
        for c in w.clients:
            c.close()
            c.transport.close()
        plane.close()
        dep.close()
