"""Problem details (RFC 9457) and metrics: typed, stable, and never echoing what was sent."""

from __future__ import annotations

import logging
import time

import pytest

from eventward._internal.gateway.metrics import OTHER, GatewayMetrics
from eventward._internal.gateway.problems import WITHHELD, redact
from eventward.errors import EventwardError, ValidationError

from .conftest import SENTINEL, Running
from .gw_support import Pki, call, event, read_until_closed, tls_socket

REQUIRED = {"type", "title", "status", "detail", "instance", "code"}


def assert_problem(r, status: int, code: str) -> dict:
    assert r.status == status, r.raw
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json
    assert set(doc) >= REQUIRED
    assert doc["status"] == status and doc["code"] == code
    assert doc["type"] == f"urn:eventward:problem:{code}"
    assert doc["instance"] == f"urn:eventward:request:{r.headers['x-request-id']}"
    assert SENTINEL not in r.raw.decode()
    assert all(SENTINEL not in v for v in r.headers.values())
    return doc


def post(gw: Running, gw_pki: Pki, path: str, body, who: str = "orders", **kw):
    return call(gw.port, gw_pki.client_ctx(who), "POST", path, body, **kw)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        # errors name the attribute and the event index, never the value (Feb 30 is no date)
        (
            "/v1/topics/orders/events",
            [
                {
                    "specversion": "1.0",
                    "id": "a",
                    "source": "/s",
                    "type": "T",
                    "data": {"email": SENTINEL},
                    "time": "2026-02-30T00:00:00Z",
                }
            ],
            400,
            "bad_input",
        ),
        (
            "/v1/topics/orders/events",
            [{"specversion": "1.0", "source": "/s", "type": "T", "data": {"email": SENTINEL}}],
            400,
            "bad_input",
        ),
        ("/v1/topics/orders/events", [{**event(1), "Bad-Name": SENTINEL}], 400, "bad_input"),
        ("/v1/topics/orders/events", {"events": [SENTINEL]}, 400, "bad_input"),
        ("/v1/keys/unwrap", {"kid": f"{SENTINEL} with spaces", "class": "pii"}, 400, "bad_input"),
        ("/v1/subjects/forget", {"subject": SENTINEL, "extra": SENTINEL}, 400, "bad_input"),
        ("/v1/subjects/forget", {"subject": SENTINEL}, 403, "forbidden"),  # orders may not forget
        (
            "/v1/policy/explain",
            {"principal": SENTINEL, "action": "Publish", "resource": {"kind": "Topic", "id": "orders"}},
            403,
            "forbidden",
        ),
    ],
)
def test_errors_never_echo_sentinels(mtls_gateway: Running, gw_pki: Pki, path, body, status, code) -> None:
    assert_problem(post(mtls_gateway, gw_pki, path, body), status, code)


def test_schema_error_names_path_and_rule(mtls_gateway: Running, gw_pki: Pki) -> None:
    doc = assert_problem(
        post(mtls_gateway, gw_pki, "/v1/keys/unwrap", {"kid": "k1", "class": "PII!"}), 400, "bad_input"
    )
    assert doc["path"] == "body.class" and doc["rule"] == "pattern"


def test_backend_error_that_leaks_a_value_is_withheld(
    mtls_gateway: Running, gw_pki: Pki, monkeypatch
) -> None:
    async def leaky(principal, topic, events):
        raise ValidationError(f"field customer.email value {SENTINEL} is invalid", path="customer.email")

    monkeypatch.setattr(mtls_gateway.backend, "publish", leaky)
    doc = assert_problem(
        post(
            mtls_gateway,
            gw_pki,
            "/v1/topics/orders/events",
            [event(1, data={"customer": {"email": SENTINEL}})],
        ),
        422,
        "validation",
    )
    assert doc["detail"] == WITHHELD
    assert doc["path"] == "customer.email"  # metadata survives


def test_unexpected_exception_is_500_and_logged_without_its_message(
    mtls_gateway: Running, gw_pki: Pki, monkeypatch, caplog
) -> None:
    async def broken(principal, topic, events):
        raise RuntimeError(f"driver said: {SENTINEL}")

    monkeypatch.setattr(mtls_gateway.backend, "publish", broken)
    caplog.set_level(logging.DEBUG)
    r = post(mtls_gateway, gw_pki, "/v1/topics/orders/events", [event(1, data={"x": SENTINEL})])
    doc = assert_problem(r, 500, "internal")
    assert doc["detail"] == "internal error"
    logged = "\n".join(rec.getMessage() + str(rec.exc_info or "") for rec in caplog.records)
    assert "RuntimeError" in logged and "broken" in logged  # type and location are there ...
    assert SENTINEL not in logged  # ... the message is not


def test_malformed_http_is_a_problem_without_echo(mtls_gateway: Running, gw_pki: Pki, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with tls_socket(mtls_gateway.port, gw_pki.client_ctx("orders")) as s:
        s.sendall(
            f"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SENTINEL}\r\n"
            f"X-Bad\x01Header: {SENTINEL}\r\n\r\n".encode()
        )
        reply, _ = read_until_closed(s, time.monotonic() + 5)
    assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"application/problem+json" in reply
    assert SENTINEL.encode() not in reply
    assert SENTINEL not in "\n".join(rec.getMessage() for rec in caplog.records)


def test_unknown_route_and_wrong_method(mtls_gateway: Running, gw_pki: Pki) -> None:
    assert_problem(
        call(mtls_gateway.port, gw_pki.client_ctx("orders"), "GET", "/v1/nope"), 404, "not_found"
    )
    r = call(mtls_gateway.port, gw_pki.client_ctx("orders"), "DELETE", "/v1/topics/orders/events")
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"] and "POST" in r.headers["allow"]


@pytest.mark.parametrize(
    "query",
    [
        "group=g&group=h",
        "group=g&max=abc",
        "group=g&max=5000",
        "group=g&wait=nan",
        "group=g&wait=%E0%A5%A7",
        "max=5",
        "group=g&extra=1",
        "group=bad%20name",
    ],
)
def test_query_validation(mtls_gateway: Running, gw_pki: Pki, query: str) -> None:
    r = call(mtls_gateway.port, gw_pki.client_ctx("reader"), "GET", f"/v1/topics/orders/events?{query}")
    assert_problem(r, 400, "bad_input")


def test_security_headers_and_no_server_banner(mtls_gateway: Running, gw_pki: Pki) -> None:
    r = call(mtls_gateway.port, gw_pki.client_ctx("orders"), "GET", "/healthz")
    assert r.json == {"status": "ok"}
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "aiohttp" not in r.headers.get("server", "") and "Python" not in r.headers.get("server", "")


def test_unwrap_returns_key_only_to_cleared_principal(mtls_gateway: Running, gw_pki: Pki) -> None:
    r = post(mtls_gateway, gw_pki, "/v1/keys/unwrap", {"kid": "kid-pii-1", "class": "pii"}, who="reader")
    assert r.status == 200 and len(r.json["key"]) == 43  # 32 bytes, base64url without padding
    assert r.headers["cache-control"] == "no-store"
    r = post(mtls_gateway, gw_pki, "/v1/keys/unwrap", {"kid": "kid-forged", "class": "pii"}, who="reader")
    assert_problem(r, 404, "key_not_found")


def test_metrics_exposition(mtls_gateway: Running, gw_pki: Pki) -> None:
    call(mtls_gateway.port, gw_pki.client_ctx("smuggler"), "GET", "/healthz")  # a denial
    r = call(mtls_gateway.port, gw_pki.client_ctx("orders"), "GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.raw.decode()
    assert 'eventward_gateway_denials_total{reason="unmapped_subject"}' in text
    assert "# TYPE eventward_gateway_request_duration_seconds histogram" in text
    assert 'eventward_gateway_request_duration_seconds_bucket{route="healthz",le="+Inf"}' in text
    assert (
        'eventward_gateway_requests_total{route="metrics",method="GET",status="200"}' not in text
    )  # not yet
    assert "smuggler" not in text and "mallory" not in text  # principals and subjects are not labels


def test_metric_series_are_capped_and_escaped() -> None:
    m = GatewayMetrics(max_series=2)
    for group in ("g1", "g2", "g3", "g4"):
        m.lag.set("orders", group, value=1)
    assert len(m.lag.series) == 3 and (OTHER, OTHER) in m.lag.series
    m.denials.inc('a"b\\c\nd')
    assert 'reason="a\\"b\\\\c\\nd"' in m.render()


def test_redact_scans_values_not_keys() -> None:
    assert (
        redact("field customer.email is missing", {"customer": {"email": "x"}})
        == "field customer.email is missing"
    )
    assert redact(f"value {SENTINEL}", [{"data": SENTINEL}]) == WITHHELD
    assert redact("limit 123456 exceeded", {"n": 123456}) == WITHHELD
    assert redact("x", [[["v"] * 20_000]]) == WITHHELD  # too much to scan: fail closed
    err = EventwardError("m")
    assert "details" not in repr(err)
