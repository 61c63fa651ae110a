"""A NATS deployment as `eventward nats up` builds it: the deployment CA, mTLS with
verify_and_map, the authorization compiled from a policy (plus the stream operator)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from eventward._internal import pki
from eventward._internal.cli.nats import OPERATOR, SERVER_CERT, with_operator
from eventward._internal.log import natsserver
from eventward._internal.log.nats import NatsTransport
from eventward._internal.policy.compile_nats import compile_nats
from eventward._internal.policy.spec import parse

from .conftest import FAST, port_block

POLICY = """
principals:
  signup-svc: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader]}
  analytics: {type: service, roles: [other-reader]}
roles:
  writer:
    - {allow: publish, topic: customers}
  reader:
    - {allow: subscribe, topic: customers}
  other-reader:
    - {allow: subscribe, topic: audit-trail}
"""


@dataclass
class Deployment:
    certs: Path
    nodes: list[natsserver.Node]
    tls: bool = True

    @property
    def urls(self) -> list[str]:
        return [n.url(tls=self.tls) for n in self.nodes]

    @property
    def ca(self) -> Path:
        return pki.ca_paths(self.certs)[0]

    def client(self, principal: str, **kw: Any) -> NatsTransport:
        """A transport authenticated by ``principal``'s certificate from the deployment CA."""
        cert, key = pki.ensure_client_cert(self.certs, principal)
        kw.setdefault("backoff", FAST)
        kw.setdefault("timeout_s", 2.0)
        return NatsTransport(self.urls, ca=self.ca, cert=cert, key=key, **kw)

    def stop(self) -> None:
        for n in self.nodes:
            natsserver.stop(n)


def start_mtls(
    root: Path, *, size: int = 1, policy: str = POLICY, principals: Iterable[str] = ()
) -> Deployment:
    certs = root / "certs"
    cert, key = pki.ensure_server_cert(certs, SERVER_CERT)
    for p in (OPERATOR, *principals):
        pki.ensure_client_cert(certs, p)
    auth = with_operator(compile_nats(parse(policy)))
    tls = natsserver.TlsFiles(pki.ca_paths(certs)[0], cert, key)
    nodes = natsserver.start_all(root / "run", size=size, port=port_block(size), tls=tls, auth_config=auth)
    return Deployment(certs, nodes)


OPERATOR_PASSWORD = "operator-pw-for-tests"


def start_passwords(root: Path, passwords: dict[str, str], policy: str = POLICY) -> Deployment:
    """No TLS, user/password authentication, the same compiled permissions (and the operator)."""
    auth = with_operator(compile_nats(parse(policy), passwords=passwords))
    op = f'{{"user": "{OPERATOR}",'
    auth = auth.replace(op, f'{op} "password": "{OPERATOR_PASSWORD}",')
    nodes = natsserver.start_all(root / "run", size=1, port=port_block(1), auth_config=auth)
    return Deployment(root / "certs", nodes, tls=False)


def raw_publish(url: str, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
    """What an attacker holding raw publish rights on a subject can do: bypass eventward."""
    async def go() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.publish(subject, payload, headers=headers)
        await nc.close()

    asyncio.run(go())
