"""Test helpers for the gateway: certificates, tokens, a server in a thread, a tiny HTTPS client.

Certificates come from eventward._internal.pki (the deployment's own CA code); the few a real CA would
never issue (expired, multi-attribute subjects, no clientAuth usage) are built here with
``cryptography`` and signed by that CA, so they differ from good ones only in what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventward._internal import pki
from eventward._internal.gateway.server import GatewayServer

# --- certificates ------------------------------------------------------------------------------


def write_pair(issued: pki.Issued, d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    pki.save(issued, cert, key)
    return cert, key


def custom_cert(
    ca: pki.Issued,
    subject: list[tuple[x509.ObjectIdentifier, str]],
    *,
    days_valid: tuple[float, float] = (-1, 30),
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
) -> pki.Issued:
    """A certificate with an arbitrary subject (ASN.1 order as given) and validity window."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, v) for oid, v in subject]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days_valid[0]))
        .not_valid_after(now + dt.timedelta(days=days_valid[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


CN, OU, O, C = (  # noqa: E741 (X.500 attribute names)
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.COUNTRY_NAME,
)


@dataclass
class Pki:
    dir: Path
    ca: pki.Issued
    ca_file: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]

    def client_ctx(self, name: str | None, *, ca_file: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        if name is not None:
            cert, key = self.clients[name]
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def der(self, name: str) -> bytes:
        cert = x509.load_pem_x509_certificate(self.clients[name][0].read_bytes())
        return cert.public_bytes(serialization.Encoding.DER)


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = pki.issue_ca("gateway test CA")
    ca_file = d / "ca.crt"
    ca_file.write_bytes(ca.cert_pem())
    server_cert, server_key = write_pair(
        pki.issue_cert(ca, "gateway", server=True, sans=["127.0.0.1"]), d, "server"
    )
    clients: dict[str, tuple[Path, Path]] = {}
    for name in ("orders", "reader", "admin", "approver", "quota-victim", "noisy", "stranger"):
        clients[name] = write_pair(pki.issue_cert(ca, name, client=True), d, name)
    # the Kafka-style subject the brief's rules expect: C, O, OU, CN in ASN.1 order
    clients["svc-billing"] = write_pair(
        custom_cert(ca, [(C, "US"), (O, "Acme"), (OU, "services"), (CN, "billing")]), d, "svc-billing"
    )
    # an escaped comma trying to smuggle "OU=services" into the CN
    clients["smuggler"] = write_pair(
        custom_cert(ca, [(O, "Acme"), (CN, "mallory,OU=services")]), d, "smuggler"
    )
    clients["no-cn"] = write_pair(custom_cert(ca, [(O, "Acme"), (OU, "people")]), d, "no-cn")
    clients["expired"] = write_pair(custom_cert(ca, [(CN, "orders")], days_valid=(-30, -1)), d, "expired")
    clients["server-only"] = write_pair(
        custom_cert(ca, [(CN, "orders")], usages=(ExtendedKeyUsageOID.SERVER_AUTH,)), d, "server-only"
    )
    rogue_ca = pki.issue_ca("rogue CA")
    clients["rogue"] = write_pair(pki.issue_cert(rogue_ca, "orders", client=True), d, "rogue")
    return Pki(d, ca, ca_file, server_cert, server_key, clients)


# --- JWT -------------------------------------------------------------------------------------


@dataclass
class Signer:
    kid: str
    alg: str
    key: Any  # private key

    def public_jwk(self) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(self.alg)
        jwk = json.loads(algo.to_jwk(self.key.public_key()))
        jwk.update(kid=self.kid, use="sig")
        return jwk

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, **header})


def make_signers() -> dict[str, Signer]:
    return {
        "rsa": Signer("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ec": Signer("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        "ed": Signer("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
    }


def write_jwks(path: Path, signers: list[Signer]) -> Path:
    path.write_text(json.dumps({"keys": [s.public_jwk() for s in signers]}))
    return path


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(issuer: str, audience: str, sub: str = "orders", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "aud": audience, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 300, **extra}


# --- a server in a thread -------------------------------------------------------------------


class ThreadedGateway:
    """Runs a GatewayServer on its own event loop thread; bound to 127.0.0.1, stopped explicitly."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="gateway-test")

    def start(self) -> ThreadedGateway:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


# --- a small HTTPS client ------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def call(
    port: int,
    ctx: ssl.SSLContext | None,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def tls_socket(port: int, ctx: ssl.SSLContext, timeout: float = 10.0) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(sock, server_hostname="127.0.0.1")


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``deadline`` passes (False)."""
    got = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(got), False
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return bytes(got), True
        if not chunk:
            return bytes(got), True
        got.extend(chunk)
    return bytes(got), False


def event(i: int = 0, data: Any = None, **ext: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-{i}",
        "source": "/tests/gateway",
        "type": "OrderPlaced",
        "datacontenttype": "application/json",
        "data": {"order": i} if data is None else data,
        **ext,
    }
