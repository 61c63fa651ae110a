"""RFC 9457 problem details from eventward's typed errors, never echoing what the client sent.

``type`` is ``urn:eventward:problem:<code>``, ``code`` is EventwardError.code, ``instance`` is
the request id (also sent as ``X-Request-Id`` and logged), not the URL. Error messages are
metadata by contract; as a second line of defence, a detail that contains any string from the
request body is withheld.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from eventward.errors import AccessDenied, EventwardError, QuotaExceeded

CONTENT_TYPE = "application/problem+json"
_SAFE_DETAILS = ("reason", "path", "rule", "index", "limit")
_MIN_ECHO = 4  # shorter body strings ("id", "pii") collide with ordinary words
_MAX_SCAN = 10_000
WITHHELD = "the request was refused; details are withheld because they would echo request data"


def type_uri(code: str) -> str:
    return f"urn:eventward:problem:{code}"


def body(status: int, code: str, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    doc: dict[str, Any] = {
        "type": type_uri(code),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    doc.update({k: v for k, v in extra.items() if v is not None})
    return doc


def response(
    status: int, code: str, detail: str, instance: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    resp = web.Response(
        status=status,
        body=orjson.dumps(body(status, code, detail, instance, **extra)),
        content_type=CONTENT_TYPE,
    )
    resp.headers["Cache-Control"] = "no-store"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def values_in(doc: Any) -> Iterable[str]:
    """Every value in a parsed JSON document as text, iteratively. Keys are structure, not data
    (error paths name them); small numbers are skipped because limits and counts collide."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, int | float) and not isinstance(node, bool) and abs(node) >= 100_000:
            yield str(node)


def redact(detail: str, payload: Any) -> str:
    """``detail`` unless it contains a string taken from the request ``payload``."""
    if payload is None:
        return detail
    for n, s in enumerate(values_in(payload)):
        if n >= _MAX_SCAN:
            return WITHHELD  # too much to check cheaply: fail closed
        if len(s) >= _MIN_ECHO and s in detail:
            return WITHHELD
    return detail


def from_error(
    e: EventwardError, instance: str, *, challenge: str | None = None, payload: Any = None
) -> web.Response:
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {
        k: e.details[k] for k in _SAFE_DETAILS if isinstance(e.details.get(k), str | int)
    }
    if isinstance(e, QuotaExceeded):
        retry = max(1, math.ceil(e.retry_after))
        headers["Retry-After"] = str(retry)
        extra["retry_after"] = retry
    if isinstance(e, AccessDenied):
        missing = getattr(e.explanation, "missing", None)
        if isinstance(missing, str):
            extra["missing"] = missing
    if e.http_status == 401 and challenge:
        reason = extra.get("reason", "invalid_token")
        err = "invalid_request" if reason in ("missing_token", "bad_scheme") else "invalid_token"
        headers["WWW-Authenticate"] = f'{challenge} realm="eventward", error="{err}"'
    detail = redact(e.message, payload)
    return response(e.http_status, e.code, detail, instance, headers=headers, **extra)


_HTTP_CODES = {
    400: "bad_input",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "oversize",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def from_http(status: int, instance: str, detail: str | None = None) -> web.Response:
    """For errors raised by the HTTP layer (no route, wrong method, malformed request)."""
    code = _HTTP_CODES.get(status, "http_error" if status < 500 else "internal")
    if detail is None:
        try:
            detail = HTTPStatus(status).description
        except ValueError:
            detail = "request refused"
    return response(status, code, detail, instance)
