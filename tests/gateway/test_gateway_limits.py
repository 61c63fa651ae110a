"""Denial of service at the perimeter: quotas, oversize bodies, slow clients, connection floods."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from eventward._internal.gateway.app import gateway_of
from eventward._internal.gateway.limits import RateLimiter
from eventward.errors import QuotaExceeded
from support_wait import wait_until

from .conftest import Running, gateway_config, start_gateway
from .gw_support import Pki, call, event, read_until_closed, tls_socket

LIMITS = {
    "max_body_bytes": 64 * 1024,
    "max_event_bytes": 16 * 1024,
    "max_batch_events": 10,
    "rate_events_per_s": 1000.0,
    "burst_events": 1000,
    "header_timeout_s": 1.0,
    "body_timeout_s": 1.0,
    "max_consume_bytes": 4096,
    "max_waiting_consumers": 1,
    "max_connections": 8,
}


@pytest.fixture(scope="module")
def limited(gw_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    cfg = gateway_config(gw_pki, limits=LIMITS, tls={"handshake_timeout_s": 1.0})
    run = start_gateway(cfg, tmp_path_factory.mktemp("home"))
    yield run
    run.gw.stop()


@pytest.fixture(scope="module")
def quota_gw(gw_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    cfg = gateway_config(
        gw_pki, limits={"rate_events_per_s": 5.0, "burst_events": 10, "max_batch_events": 10}
    )
    run = start_gateway(cfg, tmp_path_factory.mktemp("home"))
    yield run
    run.gw.stop()


def raw_ctx(gw_pki: Pki, name: str):
    """For raw-socket tests that poll for readability: TLS 1.2, whose session ticket arrives inside
    the handshake (a TLS 1.3 ticket arriving later would look like a reply)."""
    import ssl

    ctx = gw_pki.client_ctx(name)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def raw_request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


# --- quotas ----------------------------------------------------------------------------------


def test_principal_over_quota_gets_429_with_retry_after(quota_gw: Running, gw_pki: Pki) -> None:
    ctx = gw_pki.client_ctx("noisy")
    r = call(quota_gw.port, ctx, "POST", "/v1/topics/orders/events", [event(i) for i in range(10)])
    assert r.status == 200  # the burst
    stored = len(quota_gw.backend.topics["orders"])
    r = call(quota_gw.port, ctx, "POST", "/v1/topics/orders/events", [event(i) for i in range(10)])
    assert r.status == 429
    retry = r.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1
    assert r.json["code"] == "quota" and r.json["retry_after"] == int(retry)
    assert len(quota_gw.backend.topics["orders"]) == stored  # nothing of the refused batch was published
    assert quota_gw.metrics.denials.value("quota") >= 1
    # another principal is not starved by the noisy one
    assert (
        call(
            quota_gw.port, gw_pki.client_ctx("quota-victim"), "POST", "/v1/topics/orders/events", [event(1)]
        ).status
        == 200
    )
    t0 = time.monotonic()  # Retry-After is enough: the bucket refills within it

    def accepted() -> bool:
        return call(quota_gw.port, ctx, "POST", "/v1/topics/orders/events", [event(1)]).status == 200

    wait_until(accepted, timeout=int(retry) + 5, interval=0.1, what="quota refilled")
    assert time.monotonic() - t0 <= int(retry) + 0.5


def test_rate_limiter_math_and_bounded_state() -> None:
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=4, max_principals=3, clock=lambda: now[0])
    rl.take("a", 4)
    with pytest.raises(QuotaExceeded) as e:
        rl.take("a", 3)
    assert e.value.retry_after == 2  # ceil(3 / 2)
    with pytest.raises(QuotaExceeded) as e:
        rl.take("a", 1)
    assert e.value.retry_after == 1  # at least 1, never 0
    now[0] = 1.5
    rl.take("a", 3)  # refilled 3 tokens
    rl.debit("a", 5)  # delivered work may overdraw
    now[0] = 2.0
    with pytest.raises(QuotaExceeded):
        rl.take("a", 1)
    for p in ("b", "c", "d", "e"):
        rl.take(p, 1)
    assert len(rl) == 3  # LRU-bounded no matter how many principals appear


# --- oversize --------------------------------------------------------------------------------


def test_huge_content_length_refused_before_the_body_is_sent(limited: Running, gw_pki: Pki) -> None:
    before = list(limited.backend.calls)
    with tls_socket(limited.port, gw_pki.client_ctx("orders")) as s:
        s.sendall(
            raw_request(
                "POST /v1/topics/orders/events HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                "Content-Length: 1000000000000\n",
                b"[1,2,3]",
            )
        )
        t0 = time.monotonic()
        reply, closed = read_until_closed(s, t0 + 5)
        elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
    assert b'"code":"oversize"' in reply
    assert closed and elapsed < 1.0  # answered and hung up at once, without waiting for a terabyte
    assert limited.backend.calls == before


def test_chunked_body_past_the_cap_is_cut_off(limited: Running, gw_pki: Pki) -> None:
    chunk = b"[" + b"1," * 4000 + b"1]"  # ~8 KB of valid-looking JSON per chunk
    sent = 0
    with tls_socket(limited.port, raw_ctx(gw_pki, "orders")) as s:
        s.sendall(
            raw_request(
                "POST /v1/topics/orders/events HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                "Transfer-Encoding: chunked\n"
            )
        )
        reply = b""
        try:
            while sent < 4 * 1024 * 1024:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                if select.select([s], [], [], 0.005)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply, closed = read_until_closed(s, time.monotonic() + 3)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
    assert closed
    assert sent < 1024 * 1024  # the server stopped reading long before the client stopped sending


def test_batch_and_event_size_limits(limited: Running, gw_pki: Pki) -> None:
    ctx = gw_pki.client_ctx("orders")
    stored = len(limited.backend.topics["orders"])
    r = call(limited.port, ctx, "POST", "/v1/topics/orders/events", [event(i) for i in range(11)])
    assert r.status == 413 and "batch of 11 events" in r.json["detail"]
    big = event(1, data={"blob": "x" * 20_000})
    r = call(limited.port, ctx, "POST", "/v1/topics/orders/events", [event(0), big])
    assert r.status == 413 and r.json["index"] == 1 and r.json["detail"].startswith("events[1]")
    assert "xxxx" not in r.raw.decode()
    assert len(limited.backend.topics["orders"]) == stored


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, 415),  # no decompression bombs
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/json"}, 200),  # control
    ],
)
def test_content_type_and_coding(limited: Running, gw_pki: Pki, headers, status) -> None:
    r = call(
        limited.port,
        gw_pki.client_ctx("orders"),
        "POST",
        "/v1/topics/orders/events",
        raw=json.dumps([event(3)]).encode(),
        headers=headers,
    )
    assert r.status == status, r.raw


# --- slow clients ------------------------------------------------------------------------------


def test_slow_headers_client_is_disconnected(limited: Running, gw_pki: Pki) -> None:
    head = raw_request("GET /v1/whoami HTTP/1.1\nHost: 127.0.0.1\nX-Slow: " + "a" * 60 + "\n")
    with tls_socket(limited.port, raw_ctx(gw_pki, "orders")) as s:
        t0 = time.monotonic()
        cut = False
        sent = 0
        for sent in range(len(head)):  # one byte every 50 ms: the head would take > 4 s
            try:
                s.sendall(head[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError, OSError):
                cut = True
                break
            if select.select([s], [], [], 0.05)[0]:
                data, closed = read_until_closed(s, time.monotonic() + 1)
                cut = closed and not data.startswith(b"HTTP/")
                break
        elapsed = time.monotonic() - t0
    assert cut, "the server kept waiting for a trickled request head"
    assert sent >= 15  # it really was trickling when it was cut
    assert elapsed < 2.5  # header_timeout_s = 1


def test_slow_body_gets_408_and_is_disconnected(limited: Running, gw_pki: Pki) -> None:
    before = list(limited.backend.calls)
    with tls_socket(limited.port, gw_pki.client_ctx("orders")) as s:
        s.sendall(
            raw_request(
                "POST /v1/topics/orders/events HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                "Content-Length: 1000\n",
                b'[{"spec',
            )
        )
        t0 = time.monotonic()
        reply, closed = read_until_closed(s, t0 + 5)
        elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert b'"code":"request_timeout"' in reply
    assert closed and 0.8 < elapsed < 2.5  # body_timeout_s = 1
    assert limited.backend.calls == before


def test_silent_tcp_client_is_cut_at_the_handshake_deadline(limited: Running) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as s:
        t0 = time.monotonic()
        data, closed = read_until_closed(s, t0 + 5)
        elapsed = time.monotonic() - t0
    assert closed and data == b"" and elapsed < 2.5  # handshake_timeout_s = 1


def _open_connections(run: Running) -> int:
    """Connections the server holds now (aiohttp's own list, what the cap counts)."""
    runner = run.gw.server._runner
    return len(runner.server.connections) if runner is not None and runner.server is not None else 0


def test_connection_cap(limited: Running, gw_pki: Pki) -> None:
    ctx = gw_pki.client_ctx("orders")
    held = [tls_socket(limited.port, ctx) for _ in range(8)]
    try:
        wait_until(lambda: _open_connections(limited) >= 8, what="held connections registered")
        s = tls_socket(limited.port, ctx)
        with s:
            try:
                s.sendall(raw_request("GET /v1/whoami HTTP/1.1\nHost: x\n"))
                data, closed = read_until_closed(s, time.monotonic() + 2)
            except (ConnectionResetError, BrokenPipeError):
                data, closed = b"", True
        assert closed and not data.startswith(b"HTTP/")
    finally:
        for h in held:
            h.close()
    wait_until(lambda: _open_connections(limited) == 0, what="held connections released")
    assert call(limited.port, ctx, "GET", "/v1/whoami").status == 200  # capacity is back


# --- bounded consumers -----------------------------------------------------------------------


def test_consume_is_bounded_by_bytes_and_waiters(limited: Running, gw_pki: Pki) -> None:
    ctx = gw_pki.client_ctx("orders")
    limited.backend.topics["orders"].clear()
    r = call(
        limited.port,
        ctx,
        "POST",
        "/v1/topics/orders/events",
        [event(i, data={"pad": "p" * 900}) for i in range(8)],
    )
    assert r.status == 200
    r = call(limited.port, ctx, "GET", "/v1/topics/orders/events?group=bytes&max=1000")
    got = r.json
    assert 1 <= len(got["events"]) < 8  # max_consume_bytes = 4096 cuts the page
    assert got["lag"] == 8 - len(got["events"])  # the rest is still there, unacknowledged
    limited.backend.topics.setdefault("quiet", [])
    limited.backend.authz.grant("orders", "Subscribe", ("Topic", "quiet"))
    results: list[float] = []

    def long_poll() -> None:
        t0 = time.monotonic()
        call(limited.port, ctx, "GET", "/v1/topics/quiet/events?group=g&wait=1.5")
        results.append(time.monotonic() - t0)

    t = threading.Thread(target=long_poll)
    t.start()
    wait_until(lambda: gateway_of(limited.gw.server.app).waiting == 1, what="first long poll waiting")
    t0 = time.monotonic()
    r = call(limited.port, ctx, "GET", "/v1/topics/quiet/events?group=g2&wait=1.5")
    second = time.monotonic() - t0
    t.join(5)
    assert r.status == 200 and r.json["events"] == []
    assert second < 1.2  # past max_waiting_consumers the poll returns at once (the other waits 1.5 s)
    assert results and results[0] >= 1.4  # the first really waited
