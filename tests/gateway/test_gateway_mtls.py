"""mTLS perimeter over real TLS handshakes on 127.0.0.1: who gets in, and as whom."""

from __future__ import annotations

import os
import socket
import ssl
import struct

import pytest

from .conftest import Running
from .gw_support import Pki, call, event, tls_socket

REQUEST = b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def handshake_refusal(port: int, ctx: ssl.SSLContext) -> str:
    """Connect and try one request. Returns "handshake" if the TLS handshake itself failed, "closed"
    if the server hung up after it; fails if any HTTP reply comes back.

    asyncio aborts a failed server handshake without flushing OpenSSL's alert, so a client sees
    EOF rather than a named alert. Under TLS 1.2 the server's Finished comes after it verified the
    client certificate, so a refused certificate fails the client's handshake; under TLS 1.3 the
    client finishes first and the refusal shows as the connection closing with no reply. Every
    bad certificate here differs from a good one in a single property (CA, validity, usage), and
    the good one is accepted by the same code, so the refusal is caused by that property.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    except (ssl.SSLError, ConnectionResetError):
        sock.close()
        return "handshake"
    with s:
        try:
            s.sendall(REQUEST)
            data = s.recv(4096)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return "closed"
    assert not data.startswith(b"HTTP/"), f"server answered over a refused handshake: {data[:60]!r}"
    return "closed"


def _ctx(gw_pki: Pki, client: str | None, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = gw_pki.client_ctx(client)
    ctx.maximum_version = version
    return ctx


@pytest.mark.parametrize(
    "client",
    [
        None,  # no client certificate at all
        "rogue",  # right CN, wrong CA
        "expired",  # right CN and CA, validity over
        "server-only",  # right CN and CA, serverAuth usage only: a server cert is not a client cert
    ],
)
def test_bad_client_certificates_fail_the_handshake(mtls_gateway: Running, gw_pki: Pki, client) -> None:
    before = list(mtls_gateway.backend.calls)
    assert handshake_refusal(mtls_gateway.port, _ctx(gw_pki, client, ssl.TLSVersion.TLSv1_2)) == "handshake"
    assert handshake_refusal(mtls_gateway.port, _ctx(gw_pki, client, ssl.TLSVersion.TLSv1_3)) in (
        "handshake",
        "closed",
    )
    assert mtls_gateway.backend.calls == before  # nothing reached the backend
    # control: the same client code with a good certificate gets through on both versions
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        r = call(mtls_gateway.port, _ctx(gw_pki, "orders", version), "GET", "/v1/whoami")
        assert r.status == 200


def _alert(port: int, ctx: ssl.SSLContext) -> str:
    """The TLS alert a client gets (as OpenSSL names it), sending a request first as curl does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as s:
            s.sendall(REQUEST)
            data = s.recv(4096)
    except ssl.SSLError as e:
        return str(e.reason)
    finally:
        sock.close()
    raise AssertionError(f"no TLS alert, got {data[:60]!r}")


def test_attack_no_client_certificate(mtls_gateway: Running, gw_pki: Pki) -> None:
    """A client without a certificate is told why: TLS 1.3's certificate_required alert (TLS 1.2
    has no such alert and gets handshake_failure), not an empty reply; nothing reaches a handler."""
    before = list(mtls_gateway.backend.calls)
    assert _alert(mtls_gateway.port, _ctx(gw_pki, None, ssl.TLSVersion.TLSv1_3)) == (
        "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    )
    assert _alert(mtls_gateway.port, _ctx(gw_pki, None, ssl.TLSVersion.TLSv1_2)) == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert _alert(mtls_gateway.port, _ctx(gw_pki, "rogue", ssl.TLSVersion.TLSv1_3)) == "TLSV1_ALERT_UNKNOWN_CA"
    assert mtls_gateway.backend.calls == before


def test_mapped_certificate_reaches_backend_as_mapped_principal(mtls_gateway: Running, gw_pki: Pki) -> None:
    # C=US,O=Acme,OU=services,CN=billing -> RULE 1 maps "CN=billing,OU=services,..." to "billing"
    r = call(
        mtls_gateway.port, gw_pki.client_ctx("svc-billing"), "POST", "/v1/topics/orders/events", [event(7)]
    )
    assert r.status == 200, r.raw
    assert r.json["ids"] == ["evt-7"]
    assert mtls_gateway.backend.calls[-1] == ("publish", "billing")
    who = call(mtls_gateway.port, gw_pki.client_ctx("orders"), "GET", "/v1/whoami").json
    assert who == {"principal": "orders", "method": "mtls"}


@pytest.mark.parametrize("client", ["smuggler", "no-cn"])
def test_unmapped_subject_is_401_after_a_good_handshake(mtls_gateway: Running, gw_pki: Pki, client) -> None:
    before = list(mtls_gateway.backend.calls)
    r = call(mtls_gateway.port, gw_pki.client_ctx(client), "POST", "/v1/topics/orders/events", [event(1)])
    assert r.status == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json["reason"] == "unmapped_subject"
    assert "www-authenticate" not in r.headers  # no Bearer challenge in mTLS mode
    assert "mallory" not in r.raw.decode()  # the subject is not echoed
    assert mtls_gateway.backend.calls == before
    assert any(e.reason == "unmapped_subject" and e.outcome == "denied" for e in mtls_gateway.audit.events)


def test_authorization_header_cannot_override_the_certificate(mtls_gateway: Running, gw_pki: Pki) -> None:
    r = call(
        mtls_gateway.port,
        gw_pki.client_ctx("reader"),
        "GET",
        "/v1/whoami",
        headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."},
    )
    assert r.json["principal"] == "reader"


def test_authenticated_but_unauthorized_is_403_and_nothing_stored(
    mtls_gateway: Running, gw_pki: Pki
) -> None:
    stored = len(mtls_gateway.backend.topics["orders"])
    r = call(mtls_gateway.port, gw_pki.client_ctx("reader"), "POST", "/v1/topics/orders/events", [event(9)])
    assert r.status == 403
    assert r.json["code"] == "forbidden"
    assert r.json["missing"] == "reader Publish Topic::orders"
    assert len(mtls_gateway.backend.topics["orders"]) == stored
    # escalation through the control plane is refused too
    r = call(
        mtls_gateway.port,
        gw_pki.client_ctx("orders"),
        "POST",
        "/v1/keys/unwrap",
        {"kid": "kid-pii-1", "class": "pii"},
    )
    assert r.status == 403
    assert "key" not in r.json


def test_tls12_with_aead_suite_works_and_no_compression(mtls_gateway: Running, gw_pki: Pki) -> None:
    ctx = gw_pki.client_ctx("orders")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_socket(mtls_gateway.port, ctx) as s:
        name, version, _ = s.cipher()
        assert version == "TLSv1.2"
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
        assert s.compression() is None
        s.sendall(REQUEST)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def test_tls12_without_aead_suites_is_refused(mtls_gateway: Running, gw_pki: Pki) -> None:
    ctx = _ctx(gw_pki, "orders", ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:AES128-SHA256")  # CBC only
    assert handshake_refusal(mtls_gateway.port, ctx) == "handshake"


def _client_hello(version: bytes, suites: list[int]) -> bytes:
    exts = (
        struct.pack("!HHH", 0x000A, 4, 2)
        + struct.pack("!H", 0x0017)  # supported_groups: secp256r1
        + struct.pack("!HHB", 0x000B, 2, 1)
        + b"\x00"  # ec_point_formats: uncompressed
        + struct.pack("!HHH", 0x000D, 4, 2)
        + struct.pack("!H", 0x0403)  # signature_algorithms: ecdsa+sha256
    )
    body = (
        version
        + os.urandom(32)
        + b"\x00"
        + struct.pack("!H", 2 * len(suites))
        + b"".join(struct.pack("!H", s) for s in suites)
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def _first_record(port: int, hello: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(hello)
        try:
            return s.recv(64)
        except ConnectionResetError:
            return b""


def test_tls11_client_hello_is_refused(mtls_gateway: Running) -> None:
    # Hand-built ClientHellos, independent of what the local OpenSSL client still allows to send.
    cbc = [0xC009, 0xC00A, 0xC013, 0xC014, 0x002F, 0x0035]  # TLS 1.1-era suites
    reply = _first_record(mtls_gateway.port, _client_hello(b"\x03\x02", [*cbc, 0xC02B]))
    assert not reply.startswith(b"\x16"), "the server answered a TLS 1.1 hello with a handshake"
    # control: the same hello saying TLS 1.2 with an AEAD suite gets a ServerHello
    reply = _first_record(mtls_gateway.port, _client_hello(b"\x03\x03", [0xC02B]))
    assert reply[:3] == b"\x16\x03\x03" and reply[5:6] == b"\x02"  # handshake record, ServerHello
